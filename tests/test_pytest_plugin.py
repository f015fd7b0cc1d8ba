"""The pytest plugin, driven through pytester: replay-only mode and record-once mode."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from dovecot import Dovecot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Imported here, not inside tests: pytester drops modules first imported during a test,
# and a second copy of pop3tap's modules would not share their classes with the first.
from pop3tap.capture import read_capture
from pop3tap.replay import replay_server

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

TEST_BODY = """
import poplib

def test_mail(pop3_replay):
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=30)
    client.user("{user}")
    client.pass_("{password}")
    assert client.stat()[0] == 3
    assert b"Subject: small message" in b"\\n".join(client.retr(1)[1])
    client.quit()
    assert pop3_replay.all_played
"""


def test_none_mode_with_a_missing_capture_fails_clearly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=TEST_BODY.format(user="u", password="p"))
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pop3tap: no capture at *captures/test_x/test_mail.p3cap*"])


def test_marker_replays_a_shipped_capture(pytester: pytest.Pytester) -> None:
    shutil.copy(ROOT / "captures" / "user-pass.p3cap", pytester.path / "alice.p3cap")
    pytester.makepyfile(
        test_y="""
import poplib
import pytest

@pytest.mark.pop3_capture("alice.p3cap")
def test_stat(pop3_replay):
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=30)
    client.user("alice")
    client.pass_("anything")
    assert client.stat() == (3, 954)
    client.quit()
    assert not pop3_replay.all_played
"""
    )
    result = pytester.runpytest_subprocess("-W", "default")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*Pop3ReplayWarning*7 recorded exchange(s) were never played*"])


@pytest.mark.realpeer
def test_once_mode_records_then_replays_offline(
    pytester: pytest.Pytester, dovecot: Dovecot, corpus: list[bytes]
) -> None:
    mailbox = dovecot.new_mailbox(corpus[:3])
    pytester.makepyfile(test_x=TEST_BODY.format(user=mailbox.user, password=mailbox.password))
    upstream = f"{dovecot.host}:{dovecot.pop3_port}"
    first = pytester.runpytest_subprocess("--pop3-record-mode=once", f"--pop3-upstream={upstream}")
    first.assert_outcomes(passed=1)
    capture = pytester.path / "captures" / "test_x" / "test_mail.p3cap"
    assert capture.is_file()
    # The upstream is gone now (a port nothing listens on): the capture answers.
    second = pytester.runpytest_subprocess("--pop3-record-mode=once", "--pop3-upstream=127.0.0.1:9")
    second.assert_outcomes(passed=1)
    third = pytester.runpytest_subprocess()
    third.assert_outcomes(passed=1)


def test_fixture_exposes_the_ca_for_stls_captures(pytester: pytest.Pytester) -> None:
    from test_replay_tls import stls_capture

    path = stls_capture(pytester.path / "caps")
    pytester.makepyfile(
        test_z=f"""
import poplib
import pytest

@pytest.mark.pop3_capture({str(path)!r}, ca_dir="ca")
def test_stls(pop3_replay):
    assert pop3_replay.ca_file.name == "pop3tap-ca.pem" and pop3_replay.ca_file.is_file()
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=30)
    client.stls(pop3_replay.ssl_context())
    assert "STLS" not in client.capa()
    client.user("alice")
    client.pass_("anything")
    assert client.stat() == (2, 320)
    client.quit()
    assert pop3_replay.all_played
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_default_capture_paths_never_collide(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pop3tap.pytest_plugin import capture_set, default_capture_path

    def node(nodeid: str) -> pytest.Item:
        name = nodeid.split("::")[-1]
        fake = SimpleNamespace(path=tmp_path / "test_x.py", nodeid=nodeid, name=name)
        return fake  # type: ignore[return-value]

    ids = [
        "test_x.py::test_fetch",
        "test_x.py::TestAlice::test_fetch",
        "test_x.py::TestBob::test_fetch",
        "test_x.py::test_p[1]",
        "test_x.py::test_p[1.5]",
        "test_x.py::test_p[1/5]",
        "test_x.py::test_p[1_5]",
    ]
    paths = [default_capture_path(node(i)) for i in ids]
    assert len(set(paths)) == len(ids)
    assert paths[0].name == "test_fetch.p3cap"
    assert paths[1].name == "TestAlice.test_fetch.p3cap"
    assert all(re.fullmatch(r"test_p-[0-9a-f]{12}\.p3cap", p.name) for p in paths[3:])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (paths[3].parent / (paths[3].name[: -len(".p3cap")] + "~2.p3cap")).write_bytes(b"x")
    assert [p.name for p in capture_set(paths[3])][1:] == [paths[3].name[:-6] + "~2.p3cap"]
    assert capture_set(paths[4]) == [paths[4]]


@given(secret=st.text(min_size=1, max_size=40).filter(lambda t: t.strip("_") != ""))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parametrized_ids_never_reach_file_names(secret: str) -> None:
    """Whatever a parameter id holds (a user name, a password), the file name has only a hash."""
    from types import SimpleNamespace

    from pop3tap.pytest_plugin import default_capture_path

    nodeid = f"tests/test_x.py::TestLogin::test_login[{secret}]"
    fake = SimpleNamespace(path=Path("/t/tests/test_x.py"), nodeid=nodeid, name="test_login")
    path = default_capture_path(fake)  # type: ignore[arg-type]
    assert re.fullmatch(r"TestLogin\.test_login-[0-9a-f]{12}\.p3cap", path.name)
    assert path.parent == Path("/t/tests/captures/test_x")


STLS_BODY = """
import poplib

def test_mail(pop3_replay):
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=30)
    client.stls(pop3_replay.ssl_context())
    client.user("{user}")
    client.pass_("{password}")
    assert client.stat()[0] == 3
    client.quit()
"""

POP3S_BODY = """
import poplib

def test_mail(pop3_replay):
    client = poplib.POP3_SSL(
        pop3_replay.host, pop3_replay.port, context=pop3_replay.ssl_context(), timeout=30
    )
    client.user("{user}")
    client.pass_("{password}")
    assert client.stat()[0] == 3
    client.quit()
"""


def _ini(pytester: pytest.Pytester, **values: str) -> None:
    lines = "\n".join(f"{key} = {value}" for key, value in values.items())
    pytester.makeini(f"[pytest]\npop3_ca_dir = ca\n{lines}\n")


@pytest.mark.realpeer
@pytest.mark.parametrize("leg", ["stls", "pop3s"])
def test_tls_recording_with_the_upstream_ca_then_offline_replay(
    pytester: pytest.Pytester, dovecot: Dovecot, corpus: list[bytes], leg: str
) -> None:
    mailbox = dovecot.new_mailbox(corpus[:3])
    body = STLS_BODY if leg == "stls" else POP3S_BODY
    pytester.makepyfile(test_x=body.format(user=mailbox.user, password=mailbox.password))
    _ini(pytester)
    port = dovecot.pop3_port if leg == "stls" else dovecot.pop3s_port
    tls = ["--pop3-upstream-tls"] if leg == "pop3s" else []
    first = pytester.runpytest_subprocess(
        "--pop3-record-mode=once",
        f"--pop3-upstream={dovecot.host}:{port}",
        f"--pop3-upstream-ca={dovecot.ca_pem_path}",
        *tls,
    )
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        ["*created pop3tap's CA for test_x.py::test_mail*ca/pop3tap-ca.pem*"]
    )
    capture = pytester.path / "captures" / "test_x" / "test_mail.p3cap"
    verbs = [e.verb for e in read_capture(capture).exchanges()]
    assert "STAT" in verbs and ("STLS" in verbs) == (leg == "stls")
    # Offline: the POP3S capture is served over TLS because it says so, without an option.
    second = pytester.runpytest_subprocess()
    second.assert_outcomes(passed=1)
    assert "created pop3tap's CA" not in second.stdout.str()


@pytest.mark.realpeer
def test_tls_failure_is_the_test_error_with_plugin_option_names(
    pytester: pytest.Pytester, dovecot: Dovecot, corpus: list[bytes]
) -> None:
    mailbox = dovecot.new_mailbox(corpus[:3])
    pytester.makepyfile(test_x=POP3S_BODY.format(user=mailbox.user, password=mailbox.password))
    _ini(pytester, pop3_upstream_tls="true")
    result = pytester.runpytest_subprocess(
        "--pop3-record-mode=once", f"--pop3-upstream={dovecot.host}:{dovecot.pop3s_port}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*pop3tap: recording test_mail.p3cap failed: TLS with the upstream*certificate verify "
         "failed*--pop3-upstream-ca FILE*"]
    )
    result.stdout.fnmatch_lines(["*(the test itself then failed with: *error_proto*"])
    assert not (pytester.path / "captures").exists() or not any(
        (pytester.path / "captures").rglob("*.p3cap")
    )


def test_unreachable_upstream_keeps_no_capture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=TEST_BODY.format(user="u", password="p"))
    result = pytester.runpytest_subprocess("--pop3-record-mode=all", "--pop3-upstream=127.0.0.1:9")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*recording test_mail.p3cap failed: cannot reach the upstream*"])
    assert not list(pytester.path.rglob("*.p3cap"))


def _two_sessions_upstream() -> Any:
    """A replay server of two shipped sessions (alice, erin), standing in for a real server."""
    return replay_server(
        [ROOT / "captures" / "user-pass.p3cap", ROOT / "captures" / "failed-login.p3cap"],
        by_user=True,
    )


ONE_CONNECTION = """
import poplib

def fetch(pop3_replay, user):
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=30)
    client.user(user)
    try:
        client.pass_("x")
        return client.stat()
    except poplib.error_proto as exc:
        return exc.args[0]
    finally:
        client.quit()

def test_mail(pop3_replay):
    assert fetch(pop3_replay, "alice") == (3, 954)
"""

TWO_CONNECTIONS = ONE_CONNECTION + """    assert fetch(pop3_replay, "erin").startswith(b"-ERR")
"""


def test_new_episodes_appends_exactly_the_missing_session(pytester: pytest.Pytester) -> None:
    with _two_sessions_upstream() as upstream:
        up = f"--pop3-upstream={upstream.host}:{upstream.port}"
        pytester.makepyfile(test_x=ONE_CONNECTION)
        pytester.runpytest_subprocess("--pop3-record-mode=once", up).assert_outcomes(passed=1)
        first = pytester.path / "captures" / "test_x" / "test_mail.p3cap"
        recorded = first.read_bytes()
        pytester.makepyfile(test_x=TWO_CONNECTIONS)
        # `none` cannot answer the second connection...
        pytester.runpytest_subprocess().assert_outcomes(failed=1)
        # ...new_episodes records just that one, through the relay.
        result = pytester.runpytest_subprocess("--pop3-record-mode=new_episodes", up)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*new_episodes: *test_mail appended 1 session(s) as "
                                     "test_mail~2.p3cap*"])
    assert first.read_bytes() == recorded
    second = first.with_name("test_mail~2.p3cap")
    commands = [f"{e.verb} {e.args}".strip() for e in read_capture(second).exchanges()]
    assert commands == ["USER erin", "PASS ********", "QUIT"]
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name, second.name]
    pytester.runpytest_subprocess().assert_outcomes(passed=1)  # offline, both sessions


def test_ini_options_and_the_pop3_config_fixture(pytester: pytest.Pytester) -> None:
    with _two_sessions_upstream() as upstream:
        pytester.makeini(
            f"[pytest]\npop3_record_mode = once\npop3_upstream = {upstream.host}:{upstream.port}\n"
            "pop3_captures_dir = from-ini\n"
        )
        pytester.makepyfile(test_x=ONE_CONNECTION)
        pytester.runpytest_subprocess().assert_outcomes(passed=1)
        assert (pytester.path / "from-ini" / "test_x" / "test_mail.p3cap").is_file()
        pytester.makeconftest(
            """
import pytest

@pytest.fixture
def pop3_config():
    return {"captures_dir": "from-fixture"}
"""
        )
        pytester.runpytest_subprocess().assert_outcomes(passed=1)
        assert (pytester.path / "from-fixture" / "test_x" / "test_mail.p3cap").is_file()
    # The shipped capture starts with CAPA, which poplib does not send: strict matching
    # (from the fixture) refuses the USER that default matching answers.
    shipped = pytester.path / "shipped" / "test_x"
    shipped.mkdir(parents=True)
    shutil.copy(ROOT / "captures" / "user-pass.p3cap", shipped / "test_mail.p3cap")
    for match, outcome in (("default", {"passed": 1}), ("strict", {"failed": 1})):
        pytester.makeconftest(
            f"""
import pytest

@pytest.fixture
def pop3_config():
    return {{"captures_dir": "shipped", "match": {match!r}}}
"""
        )
        replayed = pytester.runpytest_subprocess("--pop3-record-mode=none")
        replayed.assert_outcomes(**outcome)
    replayed.stdout.fnmatch_lines(["*strict match failed: \"USER alice\" is not the next command*"])
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def pop3_config():
    return {"captures_dir": "from-fixture", "record_mod": "none"}
"""
    )
    typo = pytester.runpytest_subprocess()
    typo.assert_outcomes(errors=1)
    typo.stdout.fnmatch_lines(["*unknown setting(s) record_mod in pop3_config*"])


def test_failed_test_keeps_a_partial_recording_and_says_so(pytester: pytest.Pytester) -> None:
    with _two_sessions_upstream() as upstream:
        pytester.makepyfile(
            test_x=ONE_CONNECTION.replace("== (3, 954)", "== (0, 0)")
            + """
def test_before_any_exchange(pop3_replay):
    raise RuntimeError("no client ever connected")
"""
        )
        result = pytester.runpytest_subprocess(
            "--pop3-record-mode=once", f"--pop3-upstream={upstream.host}:{upstream.port}"
        )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*kept a partial recording for test_x.py::test_mail (the test failed)*",
            "*nothing kept for test_x.py::test_before_any_exchange*",
        ]
    )
    assert [p.name for p in pytester.path.rglob("*.p3cap")] == ["test_mail.p3cap"]


TEN_TESTS = """
import poplib
import pytest

@pytest.mark.parametrize("n", range(10))
def test_fetch(pop3_replay, n):
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=30)
    client.user("alice")
    client.pass_("x")
    assert client.stat() == (3, 954)
    client.retr(1)
    client.quit()
"""


def test_progress_line_holds_only_pytest_characters(pytester: pytest.Pytester) -> None:
    """Recording and replaying log events and warnings; none reaches the terminal."""
    pytester.makepyfile(test_p=TEN_TESTS)
    with _two_sessions_upstream() as upstream:
        up = f"--pop3-upstream={upstream.host}:{upstream.port}"
        for run in range(20):
            mode = ("all", "once", "none", "new_episodes")[run % 4]
            result = pytester.runpytest_subprocess(
                f"--pop3-record-mode={mode}", up, "-p", "no:cacheprovider"
            )
            result.assert_outcomes(passed=10)
            lines = result.stdout.lines
            progress = [line for line in lines if line.startswith("test_p.py")]
            assert len(progress) == 1, lines
            assert re.fullmatch(r"test_p\.py \.{10}\s+\[100%\]", progress[0]), progress
            assert result.stderr.lines == [], result.stderr.lines
