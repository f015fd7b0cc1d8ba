"""Subcommands that read captures do not load the serving stack.

``trio`` and ``structlog`` take most of the start-up time of a short command; only
``record``, ``replay`` and the other serving commands need them, and they import them when
they run. Each case runs the command in a fresh interpreter (``pop3tap.cli.main``, as the
console script does) and reads which modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synthetic_captures import pipelined_capture

SERVING_STACK = ("trio", "structlog")

_PROBE = """\
import json, sys
from pop3tap.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = [name for name in {names!r} if name in sys.modules]
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.stderr)
"""


def loaded_by(args: list[str], cwd: Path) -> tuple[object, list[str]]:
    """The exit code of ``pop3tap ARGS`` and which of the serving modules it loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(names=SERVING_STACK), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipelined_capture(tmp_path_factory.mktemp("lazy"), 10)


@pytest.mark.parametrize(
    "command",
    [["show"], ["show", "--format", "json"], ["lint"], ["diff", "{capture}"], ["--help"]],
)
def test_reading_commands_load_neither_trio_nor_structlog(
    command: list[str], capture: Path, tmp_path: Path
) -> None:
    args = [part.format(capture=capture) for part in command]
    if args[0] != "--help":
        args.append(str(capture))
    code, loaded = loaded_by(args, tmp_path)
    assert code in (0, 1), code  # lint exits 1 when it has findings
    assert loaded == []


def test_a_serving_command_still_loads_them(tmp_path: Path) -> None:
    """The probe sees a load: ``replay`` imports its server before it finds the capture
    missing (one line, exit 2)."""
    code, loaded = loaded_by(["replay", str(tmp_path / "missing.p3cap")], tmp_path)
    assert code == 2
    assert loaded == list(SERVING_STACK)
