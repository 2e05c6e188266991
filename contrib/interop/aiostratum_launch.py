"""Starts aiostratum-proxy 1.1 unchanged on a current Python and PyYAML (tests/interop_aiostratum.rs).

aiostratum-proxy pins PyYAML==3.12 and calls `yaml.load(text)` without a Loader, which PyYAML 6
refuses. This launcher only shims the environment, it does not touch aiostratum's code:
  - `yaml.load` gets SafeLoader as its default Loader (the config is plain YAML);
  - an event loop is installed first, so `asyncio.get_event_loop()` in its `main()` finds one
    on Pythons that no longer create one implicitly.
Then it runs aiostratum's own entry point with the arguments given (e.g. `--config FILE -l`).
"""

import asyncio
import functools
import sys

import yaml

yaml.load = functools.partial(yaml.load, Loader=yaml.SafeLoader)
asyncio.set_event_loop(asyncio.new_event_loop())

from aiostratum_proxy.application import main  # noqa: E402 (after the shims on purpose)

if __name__ == "__main__":
    sys.argv[0] = "aiostratum-proxy"
    sys.exit(main())
