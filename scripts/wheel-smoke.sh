#!/usr/bin/env bash
# Build pop3tap's sdist and, from it, the wheel; install the wheel into a fresh venv outside
# the checkout and use it from there: `pop3tap --help`, `pop3tap demo` (the sample captures
# are package data) and a poplib round trip against `pop3tap replay`, by the CLI and by the
# library. Run by scripts/test.sh; needs .venv (with the dev extras, for `build`).
#   bash scripts/wheel-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$PWD"
work="$(mktemp -d -t pop3tap-wheel.XXXXXX)"
replay_pid=""
cleanup() {
    if [ -n "$replay_pid" ]; then kill "$replay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> wheel: build the sdist, then the wheel from it"
.venv/bin/python -m build -q --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
wheel="$(ls "$work"/dist/pop3tap-*.whl)"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"

cd "$work"  # nothing of the checkout is importable from here
export PATH="$work/venv/bin:$PATH"
python - "$checkout" <<'PY'
import sys
from pathlib import Path

import pop3tap

where = Path(pop3tap.__file__).resolve()
assert not where.is_relative_to(Path(sys.argv[1])), f"imported from the checkout: {where}"
assert (where.parent / "samples" / "user-pass.p3cap").is_file(), "no sample captures"
PY

echo "==> wheel: pop3tap --help and pop3tap demo"
pop3tap --help >/dev/null
pop3tap demo --log-file "$work/demo.log" >"$work/demo.out"
grep -q '\[tx\] USER alice' "$work/demo.out" || { cat "$work/demo.out" >&2; exit 1; }

echo "==> wheel: poplib against pop3tap replay (CLI and library)"
samples="$(python -c 'import pathlib, pop3tap; print(pathlib.Path(pop3tap.__file__).parent / "samples")')"
pop3tap replay --listen 127.0.0.1:0 --log-file "$work/replay.log" "$samples/user-pass.p3cap" &
replay_pid=$!
python - "$work/replay.log" "$samples/user-pass.p3cap" <<'PY'
import json
import poplib
import sys
import time
from pathlib import Path

import pop3tap


def fetch(host: str, port: int) -> None:
    client = poplib.POP3(host, port, timeout=10)
    client.user("alice")
    client.pass_("anything")
    assert client.stat() == (3, 954), client.stat()
    assert b"Subject:" in b"\n".join(client.retr(1)[1])
    client.quit()


log = Path(sys.argv[1])
for _attempt in range(500):  # the CLI's replay.listening line gives the port it bound
    lines = log.read_text().splitlines() if log.exists() else []
    events = [json.loads(line) for line in lines]
    listening = [e for e in events if e["event"] == "replay.listening"]
    if listening:
        break
    time.sleep(0.02)
else:
    sys.exit("pop3tap replay never logged replay.listening")
host, _, port = listening[0]["listen"].rpartition(":")
fetch(host, int(port))
with pop3tap.replay_server(sys.argv[2]) as server:
    fetch(server.host, server.port)
PY
kill -INT "$replay_pid"
wait "$replay_pid"
replay_pid=""
echo "==> wheel: OK ($(basename "$wheel"))"
