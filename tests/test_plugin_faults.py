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
