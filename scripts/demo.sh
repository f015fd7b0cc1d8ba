#!/usr/bin/env bash
# Set up pop3tap and run its main job on a shipped capture, with nothing but loopback:
#   bash scripts/demo.sh
# A replay server serves captures/user-pass.p3cap, the recording relay sits in front of it,
# poplib drives a session through the relay, and the new capture is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
pop3tap_venv ""
exec .venv/bin/pop3tap demo "$@"
