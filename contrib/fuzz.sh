#!/usr/bin/env bash
# Fuzzes every parser that reads outside input (fuzz/fuzz_targets/), one target after another.
#   bash contrib/fuzz.sh [SECONDS]      SECONDS per target, default 60
#   FUZZ_TARGETS="config gbt" bash contrib/fuzz.sh 30     only these targets
# Seeds: fuzz/seeds/<target>/ (committed). New inputs: fuzz/corpus/<target>/; crashing inputs:
# fuzz/artifacts/<target>/ (both git-ignored). Needs a nightly toolchain (cargo fuzz uses
# -Zsanitizer flags). Built once without a sanitizer: the parsers are safe Rust, and panics,
# overflow checks and debug assertions (on in this build) are what the targets look for.
# Exit status: non-zero when any target crashed (or did not build).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz)"
    cargo install cargo-fuzz
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing the $toolchain toolchain"
    rustup toolchain install "$toolchain" --profile minimal
fi

cd fuzz
# The fuzz workspace starts from the main lock file (same dependency versions); cargo adds the
# fuzzing crates to this copy, which is not committed.
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock
targets=${FUZZ_TARGETS:-$(cargo +"$toolchain" fuzz list)}
echo "fuzz.sh: building the fuzz targets (sanitizer: $sanitizer)"
cargo +"$toolchain" fuzz build -s "$sanitizer"

mkdir -p logs
failed=0
report=()
for t in $targets; do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    log="logs/$t.log"
    touch "logs/$t.start"
    echo "fuzz.sh: $t for ${secs}s"
    set +e
    cargo +"$toolchain" fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    # libFuzzer's final stats line, or its last "#N DONE" / "#N ..." status line.
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    fi
    # Only what this run wrote (earlier artifacts stay for reproduction).
    crash=$(find "artifacts/$t" -type f -newer "logs/$t.start" -printf '%f\n' 2>/dev/null \
        | grep -E '^(crash|oom|timeout|leak)-' | head -1 || true)
    if [ "$rc" -ne 0 ] || [ -n "$crash" ]; then
        failed=1
        status="CRASHED (exit $rc${crash:+, fuzz/artifacts/$t/$crash}; log fuzz/$log)"
        grep -m3 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /' || true
    else
        status="ok"
    fi
    report+=("$(printf '%-16s %12s executions  %s' "$t" "${execs:-?}" "$status")")
done

echo
echo "fuzz.sh: ${secs}s per target"
printf '%s\n' "${report[@]}"
exit $failed
