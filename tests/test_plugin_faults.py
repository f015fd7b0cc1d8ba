"""The pytest plugin's pop3_faults marker, run in a real pytest (pytester)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


def test_pop3_faults_marker_reaches_the_replay_server(pytester: pytest.Pytester) -> None:
    captures = pytester.path / "captures"
    captures.mkdir()
    shutil.copy(ROOT / "captures" / "user-pass.p3cap", captures / "user-pass.p3cap")
    pytester.makepyfile(
        test_client='''
import poplib
import pytest

@pytest.mark.pop3_capture("captures/user-pass.p3cap")
@pytest.mark.pop3_faults('PASS:err="[IN-USE] Mailbox locked"', "STAT:close")
def test_locked(pop3_replay):
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=10)
    client.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\\[IN-USE\\] Mailbox locked"):
        client.pass_("x")

@pytest.mark.pop3_capture("captures/user-pass.p3cap")
@pytest.mark.pop3_faults("STAT:explode")
def test_bad_spec(pop3_replay):
    pass
'''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*pop3tap: fault 'STAT:explode': unknown fault 'explode'*"])


def test_pop3_faults_markers_add_up(pytester: pytest.Pytester) -> None:
    """A module-wide ``pytestmark`` fault and a test's own both apply, as stacked markers
    of other plugins do (the marker takes any number of specs, from any level)."""
    captures = pytester.path / "captures"
    captures.mkdir()
    shutil.copy(ROOT / "captures" / "user-pass.p3cap", captures / "user-pass.p3cap")
    pytester.makepyfile(
        test_client='''
import poplib
import pytest

pytestmark = pytest.mark.pop3_faults('PASS:err="[IN-USE] Mailbox locked"')

@pytest.mark.pop3_capture("captures/user-pass.p3cap")
@pytest.mark.pop3_faults('USER:err="[SYS/TEMP] busy"')
@pytest.mark.pop3_faults("NOOP:close")
def test_both(pop3_replay):
    assert len(pop3_replay.server.faults.faults) == 3
    client = poplib.POP3(pop3_replay.host, pop3_replay.port, timeout=10)
    with pytest.raises(poplib.error_proto, match=r"\\[SYS/TEMP\\] busy"):
        client.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\\[IN-USE\\] Mailbox locked"):
        client.pass_("x")
'''
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore")
    result.assert_outcomes(passed=1)
