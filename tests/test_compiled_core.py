"""The protocol core as mypyc compiles it and as Python runs it: the same values either way.

CI runs the whole suite twice, once with the compiled core and once with
``POP3TAP_PURE_PYTHON=1``; these tests pin what the two builds must share (constructors,
immutability, equality, hashing, repr of the events) and that the switch and the build
are what CI asked for.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pop3tap.protocol
from pop3tap import _pure
from pop3tap.protocol import (
    COMMANDS,
    NEED_DATA,
    Barrier,
    CommandSent,
    Counter,
    Direction,
    EndOfInput,
    EndOfStream,
    Event,
    Exchange,
    Flag,
    Greeting,
    LineTooLong,
    PairingLost,
    PlaintextAfterStls,
    SaslChallenge,
    SaslResponse,
    SessionSummary,
    StartTls,
    Status,
    StrayLine,
    Suppressed,
    TlsData,
    UnsolicitedLine,
)
from pop3tap.protocol._body import Body
from pop3tap.protocol._pending import ClientLine, Pending

EVENTS = (
    Event,
    Greeting,
    CommandSent,
    SaslChallenge,
    SaslResponse,
    StartTls,
    UnsolicitedLine,
    StrayLine,
    Exchange,
    PairingLost,
    Suppressed,
    EndOfStream,
)
#: Mutable state records of the core that also spell out their constructors.
RECORDS = (Body, ClientLine, Pending)
PROTOCOL_DIR = Path(pop3tap.protocol.__file__).resolve().parent


#: A value for each field name that differs from the field's default (mypyc keeps no
#: usable annotations, so the values are listed rather than derived from the types).
SAMPLES: dict[str, object] = {
    "at": 3.5,
    "sent_at": 1.25,
    "first_byte_at": 2.0,
    "status": Status.ERR,
    "direction": Direction.SERVER,
    "flags": frozenset({Flag.PIPELINED, Flag.BARE_LF}),
    "text": "text",
    "verb": "RETR",
    "shown_verb": "RETR",
    "args": "1",
    "masked_args": "1",
    "resp_code": "IN-USE",
    "apop_timestamp": "<1.2@host>",
    "first_line": "-ERR no",
    "reason": "flood",
    "kind": "anomalies",
    "seq": 7,
    "length": 12,
    "start": 10,
    "end": 20,
    "client_trailing": 3,
    "server_trailing": 4,
    "client_switch": 5,
    "server_switch": 6,
    "body_lines": 8,
    "body_bytes": 90,
    "request_start": 11,
    "request_end": 21,
    "response_start": 31,
    "response_end": 41,
    "lines": 13,
    "bytes": 140,
    "unanswered": 2,
    "consumed": 15,
    "newlines": 16,
    "cost": 17,
    "sasl_omitted": 18,
    "pipelined": True,
    "cancelled": True,
    "multiline": True,
    "final": True,
    "truncated": True,
    "bare_lf": True,
    "has_args": True,
    "login": True,
    "may_open_auth": True,
    "awaiting_sasl": True,
    "sasl": (("+", "12"), ("c", "*")),
    "tail": b"\r\n",
    "barrier": Barrier.SASL,
    "counter": Counter.RETR,
}
#: Where a record's field of the same name has another type.
RECORD_SAMPLES: dict[type, dict[str, object]] = {
    ClientLine: {"text": b"RETR 1"},
    Pending: {"sasl": [("+", "12")]},
}


def sample(cls: type, name: str) -> object:
    if name == "pending":
        return make(Pending)
    return RECORD_SAMPLES.get(cls, {}).get(name, SAMPLES[name])


def values_of(cls: type) -> dict[str, object]:
    return {f.name: sample(cls, f.name) for f in dataclasses.fields(cls)}


def make(cls: type) -> Any:
    return cls(**values_of(cls))


@pytest.mark.parametrize("cls", EVENTS + RECORDS, ids=lambda cls: cls.__name__)
def test_constructors_take_every_field_by_name_and_by_position(cls: type) -> None:
    values = values_of(cls)
    by_name = cls(**values)
    assert {name: getattr(by_name, name) for name in values} == values
    by_position = cls(*values.values())
    assert by_position == by_name
    for name, value in values.items():  # the flags are all True above: one at a time
        if isinstance(value, bool):
            flipped = cls(**(values | {name: not value}))
            assert [n for n in values if getattr(flipped, n) != values[n]] == [name]
    with pytest.raises(TypeError):
        cls(*values.values(), "one too many")


@pytest.mark.parametrize("cls", EVENTS + RECORDS, ids=lambda cls: cls.__name__)
def test_omitted_arguments_take_the_declared_defaults(cls: type) -> None:
    fields = dataclasses.fields(cls)
    required = {
        f.name: sample(cls, f.name)
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    built = cls(**required)
    for f in fields:
        if f.name not in required:
            assert getattr(built, f.name) == f.default, f.name
    if required:
        with pytest.raises(TypeError):
            cls(**dict(list(required.items())[:-1]))


@pytest.mark.parametrize("cls", EVENTS, ids=lambda cls: cls.__name__)
def test_events_stay_immutable(cls: type) -> None:
    event = make(cls)
    for f in dataclasses.fields(cls):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, f.name, sample(cls, f.name))
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(event, f.name)
        assert getattr(event, f.name) == values_of(cls)[f.name]
    with pytest.raises((AttributeError, TypeError)):
        event.not_a_field = 1


@pytest.mark.parametrize("cls", EVENTS, ids=lambda cls: cls.__name__)
def test_events_compare_hash_and_print_by_value(cls: type) -> None:
    event, twin = make(cls), make(cls)
    assert event == twin and event is not twin
    assert hash(event) == hash(twin)
    assert len({event, twin}) == 1
    other = dataclasses.replace(event, at=event.at + 1)
    assert other != event
    assert event != (*values_of(cls).values(),)
    shown = ", ".join(f"{name}={value!r}" for name, value in values_of(cls).items())
    assert repr(event) == f"{cls.__name__}({shown})"


def test_records_compare_by_value_and_change_in_place() -> None:
    line, twin = make(ClientLine), make(ClientLine)
    assert line == twin
    line.cost += 1
    assert line != twin


def test_exchange_latencies_come_from_its_times() -> None:
    values = values_of(Exchange) | {"at": 3.0, "sent_at": 1.0, "first_byte_at": 1.5}
    exchange = Exchange(**values)
    assert (exchange.latency_first_byte, exchange.latency_complete) == (0.5, 2.0)


def core_modules() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.py") if p.name != "__init__.py")


def test_compiled_says_which_modules_were_loaded() -> None:
    for name in core_modules():
        module = sys.modules.get(f"pop3tap.protocol.{name}")
        if module is None:
            continue
        compiled = str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES))
        assert compiled == pop3tap.protocol.COMPILED, name


def run_fresh(code: str, pure: str | None) -> str:
    """What ``code`` prints in a fresh interpreter, with ``POP3TAP_PURE_PYTHON`` set to
    ``pure`` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "POP3TAP_PURE_PYTHON"}
    if pure is not None:
        env["POP3TAP_PURE_PYTHON"] = pure
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def loaded_build(pure: str | None) -> str:
    """Import the core in a fresh interpreter; which build, scanner and extensions loaded."""
    code = (
        "import sys, pop3tap.protocol as p, pop3tap.protocol._bodyscan as b;"
        "so = sorted(n for n, m in sys.modules.items() if n.startswith('pop3tap')"
        " and not (getattr(m, '__file__', None) or '.py').endswith('.py'));"
        "print(p.COMPILED, b.SCANNER, len(so), so)"
    )
    return run_fresh(code, pure)


def built_core() -> bool:
    """Whether every core module has a compiled twin next to its source."""
    built = {p.name.split(".")[0] for s in EXTENSION_SUFFIXES for p in PROTOCOL_DIR.glob(f"*{s}")}
    return set(core_modules()) <= built


def test_the_pure_switch_loads_python_sources_for_the_whole_core() -> None:
    assert loaded_build("1") == "False python 0 []"  # no extension module at all
    unset = loaded_build(None)
    assert unset == loaded_build("0")
    if built_core():  # every core module, the shared library and the C scanners
        assert unset.startswith(f"True c {len(core_modules()) + 3} "), unset
    else:
        assert unset.startswith("False "), unset


def recording_path_builds(pure: str | None) -> list[bool]:
    """Import the recording path in a fresh interpreter: which of its modules are compiled,
    then whether the core is."""
    code = (
        "import importlib, sys, pop3tap._pure as q, pop3tap.protocol as p;"
        "from importlib.machinery import EXTENSION_SUFFIXES as x;"
        "print(*[str(importlib.import_module(n).__file__).endswith(tuple(x))"
        " for n in q.RECORDING_PATH], p.COMPILED)"
    )
    return [word == "True" for word in run_fresh(code, pure).split()]


def test_the_recording_path_is_compiled_exactly_when_the_core_is() -> None:
    """The relay's recording path is in the core's mypyc group: one switch and one build
    decide both (half of a group would hold two copies of a class)."""
    assert _pure.RECORDING_PATH, "nothing listed"
    assert recording_path_builds("1") == [False] * (len(_pure.RECORDING_PATH) + 1)
    unset = recording_path_builds(None)
    assert len(set(unset)) == 1, unset
    assert unset[0] is built_core()


def test_the_compiled_core_is_in_use_when_required() -> None:
    """scripts/test.sh sets POP3TAP_REQUIRE_COMPILED_CORE=1, so CI fails if mypyc's build
    silently fell back to Python (and, in its pure run, if the switch was not honoured)."""
    if os.environ.get("POP3TAP_REQUIRE_COMPILED_CORE") != "1":
        pytest.skip("POP3TAP_REQUIRE_COMPILED_CORE is not set")
    assert built_core()
    assert pop3tap.protocol.COMPILED is not _pure.requested()
    for name in _pure.RECORDING_PATH:
        compiled = str(importlib.import_module(name).__file__).endswith(tuple(EXTENSION_SUFFIXES))
        assert compiled is not _pure.requested(), name


def test_the_pure_switch_leaves_earlier_finders_first() -> None:
    """A finder a program put in front of the path finder still sees pop3tap's imports."""
    code = (
        "import sys\n"
        "seen = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        seen.append(name)\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import pop3tap.protocol\n"
        "print('pop3tap.protocol._observer' in seen, pop3tap.protocol.COMPILED)\n"
    )
    env = {**os.environ, "POP3TAP_PURE_PYTHON": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "False"]


# ---------------------------------------------------------------------------- differential

CLIENT_PIECES = [
    b"USER alice\r\n",
    b"PASS s3cr3t-pw\r\n",
    b"APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AGJvYgBwdw==\r\n",
    b"AUTH\r\n",
    b"dGVzdA==\r\n",
    b"*\r\n",
    b"STLS\r\n",
    b"CAPA\r\n",
    b"STAT\r\n",
    b"LIST\r\n",
    b"RETR 1\r\n",
    b"TOP 1 0\r\n",
    b"UIDL\r\n",
    b"DELE 1\r\n",
    b"NOOP\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
    b"pass x\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff\xfe",
]
SERVER_PIECES = [
    b"+OK ready <1.2@host>\r\n",
    b"+OK\r\n",
    b"+OK 2 320\r\n",
    b"-ERR no\r\n",
    b"-ERR [IN-USE] locked\r\n",
    b"+ \r\n",
    b"+ ZGF0YQ==\r\n",
    b"1 120\r\n",
    b"Subject: x\r\n",
    b"..dotted\r\n",
    b".\r\n",
    b"\n.\n",
    b"+OK begin TLS\r\n",
    b"\x16\x03\x01\x00",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff",
]


def stream(pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    """Bytes made of protocol-looking pieces and arbitrary bytes, in any order."""
    return st.lists(st.sampled_from(pieces) | st.binary(max_size=12), max_size=8).map(b"".join)


STEP = st.one_of(
    st.tuples(st.just("c"), stream(CLIENT_PIECES)),
    st.tuples(st.just("s"), stream(SERVER_PIECES)),
    st.tuples(st.sampled_from("CStg"), st.just(b"")),
)
SESSION = st.fixed_dictionaries(
    {"max_line": st.sampled_from([8, 24, 80, 8192]), "steps": st.lists(STEP, max_size=14)}
)


class CoreChild:
    """A child interpreter running ``tests/core_differential.py`` on one build of the core."""

    def __init__(self, pure: bool) -> None:
        env = {k: v for k, v in os.environ.items() if k != "POP3TAP_PURE_PYTHON"}
        env |= {"PYTHONHASHSEED": "0", "POP3TAP_PURE_PYTHON": "1" if pure else "0"}
        script = Path(__file__).with_name("core_differential.py")
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.compiled = json.loads(self.process.stdout.readline())

    def run(self, session: dict[str, Any]) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(session) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the child exited with {self.process.wait()}"
        return json.loads(answer)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def both_builds() -> Iterator[tuple[CoreChild, CoreChild]]:
    if not built_core():
        if os.environ.get("POP3TAP_REQUIRE_COMPILED_CORE") == "1":
            pytest.fail("the compiled core is not built")
        pytest.skip("the compiled core is not built")
    compiled, pure = CoreChild(pure=False), CoreChild(pure=True)
    try:
        assert (compiled.compiled, pure.compiled) == (True, False)
        yield compiled, pure
    finally:
        compiled.close()
        pure.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=SESSION)
def test_compiled_and_pure_cores_agree_on_any_session(
    both_builds: tuple[CoreChild, CoreChild], session: dict[str, Any]
) -> None:
    """Any bytes, chunked and ended any way: the same events, masked bytes, body chunks,
    phases and summary from the compiled core as from the Python sources."""
    request = {
        "max_line": session["max_line"],
        "steps": [[kind, base64.b64encode(data).decode()] for kind, data in session["steps"]],
    }
    compiled, pure = both_builds
    assert compiled.run(request) == pure.run(request)


RECORDER_STEP = st.one_of(
    st.tuples(st.sampled_from("cq"), stream(CLIENT_PIECES)),
    st.tuples(st.sampled_from("sQ"), stream(SERVER_PIECES)),
    st.tuples(st.sampled_from("CSw"), st.just(b"")),
)
RECORDER_SESSION = st.fixed_dictionaries(
    {
        "max_line": st.sampled_from([24, 80, 8192]),
        "steps": st.lists(RECORDER_STEP, max_size=14),
        "recorder": st.fixed_dictionaries(
            {
                "intercept": st.booleans(),
                "keep_secrets": st.booleans(),
                "faults": st.lists(
                    st.sampled_from(
                        ["RETR:cut=10", "LIST:err=busy", "STAT:garble", "NOOP:close", "USER:stall"]
                    ),
                    max_size=2,
                ),
            }
        ),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=RECORDER_SESSION)
def test_compiled_and_pure_recorders_agree_on_any_session(
    both_builds: tuple[CoreChild, CoreChild], session: dict[str, Any]
) -> None:
    """The relay's recording path, compiled and not: any session, chunked, queued and
    worked off any way, with or without STLS interception, kept secrets and faults, gives
    the same capture records, log calls (and the exceptions they log) and fault steps."""
    request = {
        **session,
        "steps": [[kind, base64.b64encode(data).decode()] for kind, data in session["steps"]],
    }
    compiled, pure = both_builds
    assert compiled.run(request) == pure.run(request)


# ---------------------------------------------------------------------------- stale builds


def checkout_copy(tmp_path: Path) -> Path:
    """A copy of this checkout's package (compiled modules and all, times kept) beside a
    setup.py, as an editable install has it."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        PROTOCOL_DIR.parent, checkout / "pop3tap", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(PROTOCOL_DIR.parent.parent / "setup.py", checkout / "setup.py")
    return checkout


def import_core(checkout: Path) -> subprocess.CompletedProcess[str]:
    """Import the copy's core in a fresh interpreter: where from, and which build."""
    env = {k: v for k, v in os.environ.items() if k != "POP3TAP_PURE_PYTHON"}
    env["PYTHONPATH"] = str(checkout)
    code = "import pop3tap.protocol as p; print(p.__file__, p.COMPILED, p._observer.__file__)"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )


def test_a_core_source_edited_after_compiling_is_what_runs(tmp_path: Path) -> None:
    """An editable install, then an edit to a core module and no reinstall: pop3tap says
    so once and runs the edited sources, not the stale compiled modules."""
    if not built_core():
        pytest.skip("the compiled core is not built")
    checkout = checkout_copy(tmp_path)
    fresh = import_core(checkout)
    where, compiled, _observer = fresh.stdout.split()
    assert Path(where).is_relative_to(checkout) and compiled == "True", fresh.stdout
    assert fresh.stderr == ""
    edited = checkout / "pop3tap" / "protocol" / "_pending.py"
    later = max(p.stat().st_mtime for p in edited.parent.glob("*.so")) + 5
    os.utime(edited, (later, later))
    stale = import_core(checkout)
    assert stale.stdout.split()[1:] == ["False", str(checkout / "pop3tap/protocol/_observer.py")]
    assert stale.stderr.count("RuntimeWarning") == 1
    assert "older than protocol/_pending.py" in stale.stderr and "pip install -e ." in stale.stderr


def test_only_a_checkout_compares_compiled_modules_with_their_sources(tmp_path: Path) -> None:
    """An installed wheel (no setup.py beside the package) is never called stale, however
    the installer dated its files; in a checkout every source newer than its build is, in
    the core and in the recording path alike."""
    package = tmp_path / "pop3tap"
    core, relay = package / "protocol", package / "relay"
    for directory in (core, relay):
        directory.mkdir(parents=True)
    for name in ("__init__", "_a", "_b", "_c"):
        (core / f"{name}.py").write_text("")
    for name in ("__init__", "_a", "_b", "_bodyscan_c"):
        (core / f"{name}.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    for name in ("_recorder", "_pumps"):
        (relay / f"{name}.py").write_text("")
    (relay / "_recorder.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    (package / "_compiled__mypyc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    for directory in (package, core, relay):
        for path in directory.iterdir():
            os.utime(path, (100, 100))
    for path in (core / "__init__.py", core / "_b.py", core / "_c.py", relay / "_recorder.py"):
        os.utime(path, (200, 200))
    assert _pure.stale_compiled_core(package) == []
    (tmp_path / "setup.py").write_text("")
    assert _pure.stale_compiled_core(package) == ["protocol/_b.py", "relay/_recorder.py"]


def test_the_stale_check_skips_what_it_cannot_stat(tmp_path: Path) -> None:
    """A compiled module that vanishes while it is compared (a reinstall removing it), a
    dangling link or a directory named like one: ``import pop3tap`` must not fail on it
    nor call it stale (Python loads neither), and a real stale module is still found."""
    (tmp_path / "setup.py").write_text("")
    relay = tmp_path / "pop3tap" / "relay"
    relay.mkdir(parents=True)
    suffix = ".cpython-311-x86_64-linux-gnu.so"
    for name in ("_stls", "_faults", "_recorder"):
        (relay / f"{name}.py").write_text("")
    (relay / f"_stls{suffix}").symlink_to(tmp_path / "gone")
    (relay / f"_faults{suffix}").mkdir()
    (relay / f"_recorder{suffix}").write_bytes(b"")
    for path in relay.iterdir():
        os.utime(path, (100, 100), follow_symlinks=False)
    for name in ("_stls", "_faults", "_recorder"):
        os.utime(relay / f"{name}.py", (200, 200))
    assert _pure.stale_compiled_core(tmp_path / "pop3tap") == ["relay/_recorder.py"]


def test_an_editable_build_that_cannot_compile_leaves_no_earlier_build(tmp_path: Path) -> None:
    """``pip install -e .`` again without a compiler (CC=false): the install goes on pure,
    so the modules an earlier build compiled next to the sources (the group, its shared
    library, the C twins, a module since dropped from the group, the library's old place)
    must all be gone; Python would load them in preference to the sources."""
    pytest.importorskip("mypyc.build")
    checkout = tmp_path / "checkout"
    package = checkout / "pop3tap"
    here = PROTOCOL_DIR.parent.parent
    for name in ("setup.py", "pyproject.toml", "README.md", "pop3tap/_pure.py"):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(here / name, checkout / name)
    for name in ("_bodyscan.c", "_maskscan.c"):
        (package / "protocol").mkdir(exist_ok=True)
        shutil.copy2(PROTOCOL_DIR / name, package / "protocol" / name)
    # The smallest sources mypyc accepts, under the names the build compiles.
    sources = [
        *(n.replace(".", "/") + ".py" for n in _pure.RECORDING_PATH),
        "pop3tap/protocol/_a.py",
    ]
    for source in [*sources, "pop3tap/relay/_dropped.py"]:
        (checkout / source).parent.mkdir(parents=True, exist_ok=True)
        (checkout / source).write_text("VALUE: int = 1\n")
    suffix = EXTENSION_SUFFIXES[0]
    earlier = [
        *(checkout / source.replace(".py", suffix) for source in sources),
        package / f"_compiled__mypyc{suffix}",
        package / "protocol" / f"_compiled__mypyc{suffix}",
        package / "protocol" / f"_bodyscan_c{suffix}",
        package / "protocol" / f"_maskscan_c{suffix}",
        package / "relay" / f"_dropped{suffix}",
    ]
    for built in earlier:
        built.write_bytes(b"an earlier build")
    env = {k: v for k, v in os.environ.items() if k not in ("POP3TAP_PURE_BUILD", "CC")}
    env["CC"] = "false"
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert "did not build" in build.stderr, build.stdout + build.stderr
    assert [str(p.relative_to(checkout)) for p in earlier if p.exists()] == []


# ---------------------------------------------------------------------------- copies


def public_values() -> list[object]:
    """One value of every public dataclass of the core (events, reader events, rows of
    the verb table, the summary), with no field at its default where a sample exists."""
    summary = SessionSummary(commands=3, retr_bytes=9, reached_update=True, tls=True)
    reader_events = [LineTooLong(5), PlaintextAfterStls(1, 2, True), TlsData(b"\x16"), EndOfInput()]
    return [*(make(cls) for cls in EVENTS), *reader_events, NEED_DATA, summary, *COMMANDS.values()]


@pytest.mark.parametrize("value", public_values(), ids=lambda value: type(value).__name__)
def test_public_values_pickle_and_copy_to_equal_values(value: object) -> None:
    """Users keep events: in a multiprocessing queue, a deepcopy, a pickled fixture."""
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(value, protocol))
        assert type(again) is type(value) and again == value
        if value is NEED_DATA:
            assert again is NEED_DATA
    for copied in (copy.copy(value), copy.deepcopy(value)):
        assert type(copied) is type(value) and copied == value


def test_events_pickled_by_one_build_load_in_the_other() -> None:
    """A capture tool pickles events in one process and loads them in another that may
    run the other build (POP3TAP_PURE_PYTHON=1 on one side only)."""
    values = public_values()
    code = (
        "import pickle, sys, pop3tap._pure as s, pop3tap.protocol as p;"
        "assert p.COMPILED is not s.requested();"
        "sys.stdout.buffer.write(pickle.dumps(pickle.loads(sys.stdin.buffer.read())))"
    )
    env = {k: v for k, v in os.environ.items() if k != "POP3TAP_PURE_PYTHON"}
    env["POP3TAP_PURE_PYTHON"] = "0" if _pure.requested() else "1"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        input=pickle.dumps(values),
        capture_output=True,
        check=True,
    )
    assert pickle.loads(result.stdout) == values


def test_every_public_dataclass_is_checked_for_pickling() -> None:
    """A value class added to the core's API later is added to :func:`public_values`."""
    public = [getattr(pop3tap.protocol, name) for name in pop3tap.protocol.__all__]
    value_classes = {
        cls for cls in public if isinstance(cls, type) and dataclasses.is_dataclass(cls)
    }
    assert value_classes <= {type(value) for value in public_values()}
