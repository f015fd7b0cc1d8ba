"""The pytest plugin's settings and capture paths (see :mod:`pop3tap.pytest_plugin`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

MODES = ("none", "once", "new_episodes", "all", "rewrite")
#: Keys the relay uses while recording.
RECORD_KEYS = (
    "record_mode",
    "upstream",
    "upstream_tls",
    "upstream_ca",
    "insecure_upstream",
    "ca_dir",
    "captures_dir",
)
#: Keys passed on to :func:`pop3tap.replay.replay_server` (``ca_dir`` too).
REPLAY_KEYS = (
    "match",
    "timing",
    "sessions",
    "by_user",
    "listen_tls",
    "cert",
    "key",
    "tls_timeout",
    "idle_timeout",
    "faults",
)
_PATH_KEYS = ("upstream_ca", "ca_dir", "cert", "key", "captures_dir")
_BOOL_KEYS = ("upstream_tls", "insecure_upstream", "by_user", "listen_tls")
#: What the command line, ini file and marker call each recording key (for hints).
OPTION_NAMES = {
    "record_mode": ("--pop3-record-mode", "pop3_record_mode"),
    "upstream": ("--pop3-upstream", "pop3_upstream"),
    "upstream_tls": ("--pop3-upstream-tls", "pop3_upstream_tls"),
    "upstream_ca": ("--pop3-upstream-ca", "pop3_upstream_ca"),
    "insecure_upstream": ("--pop3-insecure-upstream", "pop3_insecure_upstream"),
    "ca_dir": ("--pop3-ca-dir", "pop3_ca_dir"),
    "captures_dir": ("--pop3-captures-dir", "pop3_captures_dir"),
    "match": ("--pop3-match", "pop3_match"),
}


def default_capture_path(node: pytest.Item, captures_dir: Path | None = None) -> Path:
    """``<test dir>/captures/<module>/<Class.test name>.p3cap``.

    The name is the node id after the file (class and test, joined by ``.``). Parameters
    (``[...]``) never reach the file name, since test ids can hold user names or
    passwords: they become a hash of the exact id. Characters a file name should not hold
    become ``_``, with the same hash, so two tests never share a capture.
    """
    test_file = Path(str(node.path))
    exact = ".".join(node.nodeid.split("::")[1:]) or node.name
    base, bracket, _params = exact.partition("[")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_") or "test"
    if bracket or name != exact:
        name += "-" + hashlib.sha256(exact.encode()).hexdigest()[:12]
    directory = captures_dir if captures_dir is not None else Path("captures")
    return test_file.parent / directory / test_file.stem / f"{name}.p3cap"


def capture_set(path: Path) -> list[Path]:
    """The capture and its numbered siblings (``name~2.p3cap`` ...), in session order.

    ``~`` never appears in a default capture name, so one test's siblings cannot be
    mistaken for another test's capture.
    """
    stem = path.name[: -len(".p3cap")] if path.name.endswith(".p3cap") else path.stem
    pattern = re.compile(re.escape(stem) + r"~(\d+)\.p3cap")
    extra = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match:
                extra.append((int(match.group(1)), candidate))
    return ([path] if path.exists() else []) + [p for _n, p in sorted(extra)]


def sibling(path: Path, number: int) -> Path:
    """The capture of session ``number`` (from 1) of a test: ``name.p3cap``, ``name~2.p3cap``..."""
    return path if number == 1 else path.with_name(f"{path.name[: -len('.p3cap')]}~{number}.p3cap")


def _command_line(config: pytest.Config) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in (*RECORD_KEYS, "match"):
        option = "pop3_" + key
        value = getattr(config.option, option, None)
        if value is not None:
            values[key] = value
    base = config.invocation_params.dir
    return {k: base / v if k in _PATH_KEYS else v for k, v in values.items()}


def _ini(config: pytest.Config) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in (*RECORD_KEYS, "match"):
        value = config.getini("pop3_" + key)
        if value not in ("", None):
            values[key] = value
    base = config.inipath.parent if config.inipath else config.rootpath
    return {k: base / str(v) if k in _PATH_KEYS else v for k, v in values.items()}


def settings(request: pytest.FixtureRequest, fixture: dict[str, Any]) -> dict[str, Any]:
    """The effective settings for one test (see the module docstring for the order)."""
    node = request.node
    marker = node.get_closest_marker("pop3_capture")
    here = Path(str(node.path)).parent
    known = set(RECORD_KEYS + REPLAY_KEYS)
    layers: list[tuple[str, dict[str, Any]]] = [
        ("the ini file", _ini(request.config)),
        ("pop3_config", dict(fixture)),
        ("the pop3_capture marker", dict(marker.kwargs) if marker else {}),
        ("the command line", _command_line(request.config)),
    ]
    merged: dict[str, Any] = {"record_mode": "none"}
    for where, layer in layers:
        unknown = sorted(set(layer) - known)
        if unknown:
            pytest.fail(
                f"pop3tap: unknown setting(s) {', '.join(unknown)} in {where} "
                f"(known: {', '.join(sorted(known))})",
                pytrace=False,
            )
        for key, value in layer.items():
            if key in _PATH_KEYS and isinstance(value, str):
                value = here / value
            merged[key] = value
    if merged["record_mode"] not in MODES:
        pytest.fail(
            f"pop3tap: record mode {merged['record_mode']!r} is not one of {', '.join(MODES)}",
            pytrace=False,
        )
    for key in _BOOL_KEYS:
        if key in merged and not isinstance(merged[key], bool):
            pytest.fail(f"pop3tap: {key} must be True or False", pytrace=False)
    return merged
