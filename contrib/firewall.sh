#!/bin/sh
# Opens the stratum port (3333) to the local network for industrial miners (the operator guide's
# ufw rule). Run as root; adjust the network to yours.
#   WSL: open the port to any address here (`ufw allow 3333/tcp`) and restrict it to local
#   addresses in the Windows firewall instead.
set -e
ufw allow from 192.168.0.0/16 to any port 3333 proto tcp
