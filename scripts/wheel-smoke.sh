#!/usr/bin/env bash
# Build pop3tap's sdist and, from it, two wheels: the compiled one (mypyc's protocol core and
# recording path, the C scanners) and the pure one (POP3TAP_PURE_BUILD=1, py3-none-any).
# Install each into a fresh venv outside the checkout and use it from there: the build it
# says it is, `pop3tap --help`, `pop3tap demo` (the sample captures are package data) and a
# poplib round trip against `pop3tap replay`, by the CLI and by the library. Run by
# scripts/test.sh; needs .venv (with the dev extras, for `build`).
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

echo "==> wheel: build the sdist, then the compiled wheel from it"
.venv/bin/python -m build -q --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
echo "==> wheel: build the pure wheel from the same sdist (POP3TAP_PURE_BUILD=1)"
mkdir "$work/sdist"
tar -xzf "$work"/dist/pop3tap-*.tar.gz -C "$work/sdist"
POP3TAP_PURE_BUILD=1 .venv/bin/python -m build -q --wheel --outdir "$work/pure" \
    "$work"/sdist/pop3tap-* >"$work/build-pure.log" 2>&1 \
    || { cat "$work/build-pure.log" >&2; exit 1; }

# smoke WHEEL BUILD: install WHEEL into a fresh venv and use it; BUILD is compiled or pure.
smoke() {
    local wheel="$1" build="$2" venv="$work/venv-$2"
    echo "==> wheel ($build): install $(basename "$wheel") into a fresh venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$wheel"
    cd "$work"  # nothing of the checkout is importable from here
    PATH="$venv/bin:$PATH" smoke_installed "$build"
    cd "$checkout"
}

smoke_installed() {
python - "$checkout" "$1" <<'PY'
import sys
from pathlib import Path

import pop3tap
import pop3tap.protocol
from pop3tap.protocol import _bodyscan

where = Path(pop3tap.__file__).resolve()
assert not where.is_relative_to(Path(sys.argv[1])), f"imported from the checkout: {where}"
assert (where.parent / "samples" / "user-pass.p3cap").is_file(), "no sample captures"
compiled = sys.argv[2] == "compiled"
assert pop3tap.protocol.COMPILED is compiled, f"COMPILED is {pop3tap.protocol.COMPILED}"
import importlib
from importlib.machinery import EXTENSION_SUFFIXES
from pop3tap import _pure
for name in _pure.RECORDING_PATH:
    where = str(importlib.import_module(name).__file__)
    assert where.endswith(tuple(EXTENSION_SUFFIXES)) is compiled, f"{name} from {where}"
assert _bodyscan.SCANNER == ("c" if compiled else "python"), _bodyscan.SCANNER
PY

echo "==> wheel ($1): pop3tap --help and pop3tap demo"
pop3tap --help >/dev/null
pop3tap demo --log-file "$work/demo-$1.log" >"$work/demo-$1.out"
grep -q '\[tx\] USER alice' "$work/demo-$1.out" || { cat "$work/demo-$1.out" >&2; exit 1; }

echo "==> wheel ($1): poplib against pop3tap replay (CLI and library)"
samples="$(python -c 'import pathlib, pop3tap; print(pathlib.Path(pop3tap.__file__).parent / "samples")')"
pop3tap replay --listen 127.0.0.1:0 --log-file "$work/replay-$1.log" "$samples/user-pass.p3cap" &
replay_pid=$!
python - "$work/replay-$1.log" "$samples/user-pass.p3cap" <<'PY'
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
}

smoke "$(ls "$work"/dist/pop3tap-*-linux_*.whl)" compiled
smoke "$(ls "$work"/pure/pop3tap-*-py3-none-any.whl)" pure
# The switch holds in an installed compiled wheel too.
(cd "$work" && POP3TAP_PURE_PYTHON=1 "$work/venv-compiled/bin/python" -c \
    'import pop3tap.protocol as p; assert not p.COMPILED, "POP3TAP_PURE_PYTHON=1 ignored"')
echo "==> wheel: OK (compiled and pure)"
