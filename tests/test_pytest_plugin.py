"""The pytest plugin, driven through pytester: replay-only mode and record-once mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dovecot import Dovecot

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
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (paths[3].parent / (paths[3].name[: -len(".p3cap")] + "~2.p3cap")).write_bytes(b"x")
    assert [p.name for p in capture_set(paths[3])][1:] == [paths[3].name[:-6] + "~2.p3cap"]
    assert capture_set(paths[4]) == [paths[4]]
