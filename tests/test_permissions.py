"""Files another user plants: the CA directory, the log and the keylog.

An unprivileged user (``nobody``, through ``runuser``) plants links and files where
pop3tap (run by root, as in CI) will write; pop3tap must refuse with one line naming the
fix, and never write a secret into a file that user can read.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clients import relay_process
from faults import greet_and_wait, scripted_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap._private import UnsafePathError, open_private_append

PYTHON = sys.executable


def pop3tap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pop3tap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def as_nobody(*command: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *command], check=True, timeout=30)


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory everyone can write (no sticky bit), reachable by ``nobody``."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("planting as another user needs root and runuser")
    base = Path(tempfile.mkdtemp(prefix="pop3tap-perm-"))
    try:
        base.chmod(0o755)
        directory = base / "shared"
        directory.mkdir()
        directory.chmod(0o777)
        yield directory
    finally:
        shutil.rmtree(base)


def planted_target(shared: Path) -> Path:
    """A file of ``nobody``'s, readable and writable by them."""
    target = shared / "stolen"
    as_nobody("sh", "-c", f"umask 0; : > {target}")
    return target


# --------------------------------------------------------------------------- CA directory


def test_ca_init_refuses_a_directory_another_user_owns(shared: Path) -> None:
    ca_dir = shared / "ca"
    target = planted_target(shared)
    as_nobody("mkdir", "-m", "0777", str(ca_dir))
    as_nobody("ln", "-s", str(target), str(ca_dir / "pop3tap-ca-key.pem"))
    for pid_guess in range(os.getpid(), os.getpid() + 400):  # the old temp names
        as_nobody("ln", "-sf", str(target), str(ca_dir / f".pop3tap-ca-key.pem.{pid_guess}.tmp"))
    result = pop3tap("ca", "init", "--force", "--ca-dir", str(ca_dir))
    assert_refused(result, str(ca_dir), "owned by nobody", "choose a path you own")
    assert target.read_bytes() == b""


def test_ca_init_refuses_a_world_writable_directory_of_ours(shared: Path) -> None:
    ca_dir = shared / "ca"
    ca_dir.mkdir()
    ca_dir.chmod(0o777)
    target = planted_target(shared)
    as_nobody("ln", "-s", str(target), str(ca_dir / "pop3tap-ca-key.pem"))
    result = pop3tap("ca", "init", "--force", "--ca-dir", str(ca_dir))
    assert_refused(result, "writable by other users", f"chmod 700 {ca_dir}")
    assert target.read_bytes() == b""


def test_a_swapped_in_ca_is_not_exported_or_used(shared: Path, tmp_path: Path) -> None:
    ca_dir = shared / "ca"
    assert pop3tap("ca", "init", "--ca-dir", str(ca_dir)).returncode == 0
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    ca_dir.chmod(0o777)  # a careless chmod: now another user can swap files
    forged = shared / "forged.pem"
    as_nobody("sh", "-c", f"echo forged > {forged}")
    as_nobody("mv", "-f", str(forged), str(ca_dir / "pop3tap-ca.pem"))
    assert_refused(pop3tap("ca", "export", "--ca-dir", str(ca_dir)), "chmod 700")
    ca_dir.chmod(0o700)  # fixed: the forged certificate, owned by nobody, is still refused
    assert_refused(pop3tap("ca", "export", "--ca-dir", str(ca_dir)), "owned by nobody")


def test_ca_init_makes_a_private_directory_nobody_else_can_read(shared: Path) -> None:
    ca_dir = shared / "new" / "ca"
    old = os.umask(0)
    try:
        result = pop3tap("ca", "init", "--ca-dir", str(ca_dir))
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "pop3tap-ca-key.pem").stat().st_mode) == 0o600
    with pytest.raises(subprocess.CalledProcessError):
        as_nobody("cat", str(ca_dir / "pop3tap-ca-key.pem"))


def test_a_loose_ca_directory_of_ours_is_tightened_to_0700(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir(mode=0o755)
    ca_dir.chmod(0o755)
    assert pop3tap("ca", "init", "--ca-dir", str(ca_dir)).returncode == 0
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700


# --------------------------------------------------------------------------- log and keylog

RECORD = ["record", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--no-captures"]


def test_log_file_does_not_follow_a_planted_link(shared: Path, tmp_path: Path) -> None:
    victim = tmp_path / "root-owned.conf"
    victim.write_text("root data\n")
    link = shared / "pop3tap.log"
    as_nobody("ln", "-s", str(victim), str(link))
    result = pop3tap(*RECORD, "--log-file", str(link))
    assert_refused(result, str(link), "symbolic link")
    assert victim.read_text() == "root data\n"


@pytest.mark.parametrize("option", ["--log-file", "--keylog"])
def test_a_file_another_user_created_is_refused(shared: Path, option: str) -> None:
    sticky = shared / "tmp"  # like /tmp: anyone may create files, only owners remove them
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / "planted"
    as_nobody("sh", "-c", f"umask 0; : > {planted}")
    args = [*RECORD, option, str(planted)]
    if option == "--keylog":
        args.append("--log-format=json")
    result = pop3tap(*args)
    assert_refused(result, str(planted), "owned by nobody", "remove it")
    assert planted.read_bytes() == b""


def test_keylog_in_a_directory_others_can_write_is_refused(shared: Path) -> None:
    result = pop3tap(*RECORD, "--keylog", str(shared / "keys.log"))
    assert_refused(result, "other users can write", "directory you own")
    assert not (shared / "keys.log").exists()


def test_a_world_writable_log_of_ours_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("")
    log.chmod(0o666)
    assert_refused(pop3tap(*RECORD, "--log-file", str(log)), "chmod 600")


def test_log_file_may_be_dev_stdout() -> None:
    """/dev/stdout is a link (made by root) to a device: that is no planted file."""
    capture = Path(__file__).resolve().parents[1] / "captures" / "user-pass.p3cap"
    proc = subprocess.Popen(
        [
            *(PYTHON, "-m", "pop3tap", "replay", str(capture), "--listen", "127.0.0.1:0"),
            *("--log-format", "json", "--log-file", "/dev/stdout"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "replay.listening" in proc.stdout.readline()
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_world_writable_captures_directory_is_warned_about(shared: Path, tmp_path: Path) -> None:
    with (
        scripted_server(greet_and_wait) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path, "--captures", str(shared)) as relay,
    ):
        log = relay.log_text()
    assert '"captures.shared_directory"' in log and "chmod 700" in log


# --------------------------------------------------------------------------- the whole class

NOBODY = 65534


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["missing", "file", "link-to-file", "link-to-missing", "dir", "fifo"]),
    owner=st.sampled_from([0, NOBODY]),
    mode=st.sampled_from([0o600, 0o640, 0o644, 0o660, 0o666, 0o602]),
    directory_mode=st.sampled_from([0o700, 0o755, 0o777, 0o1777]),
)
def test_a_private_file_is_ours_and_0600_or_refused(
    tmp_path_factory: pytest.TempPathFactory, kind: str, owner: int, mode: int, directory_mode: int
) -> None:
    """Whatever another user left at the path, pop3tap writes only to a 0600 file it owns."""
    if os.geteuid() != 0:
        pytest.skip("making files of another user needs root")
    directory = tmp_path_factory.mktemp("private")
    directory.chmod(directory_mode)
    path = directory / "secret.log"
    elsewhere = directory / "elsewhere"
    if kind == "file":
        path.write_text("")
    elif kind == "link-to-file":
        elsewhere.write_text("")
        elsewhere.chmod(mode)
        os.symlink(elsewhere, path)
    elif kind == "link-to-missing":
        os.symlink(elsewhere, path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    if kind not in ("missing", "link-to-missing", "link-to-file"):
        path.chmod(mode)
    if kind != "missing":
        os.lchown(path, owner, owner)
    try:
        fd = open_private_append(path, "test file")
    except (UnsafePathError, OSError) as exc:
        assert "Traceback" not in str(exc) and "\n" not in str(exc)
        assert not elsewhere.exists() or elsewhere.read_bytes() == b""
        return
    try:
        os.write(fd, b"secret\n")
        info = os.fstat(fd)
    finally:
        os.close(fd)
    assert stat.S_ISREG(info.st_mode)
    assert info.st_uid == os.geteuid()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert not path.is_symlink()
    assert not elsewhere.exists() or elsewhere.read_bytes() == b""


def test_a_shared_directory_used_for_other_things_is_not_chmodded(tmp_path: Path) -> None:
    """`--ca-dir ~` by mistake: pop3tap refuses rather than making a home directory 0700."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    (home / "notes.txt").write_text("mine")
    result = pop3tap("ca", "init", "--ca-dir", str(home))
    assert_refused(result, "holds other files", f"chmod 700 {home}")
    assert stat.S_IMODE(home.stat().st_mode) == 0o755


@pytest.mark.parametrize("planted", ["directory", "link"])
def test_a_captures_directory_another_user_controls_is_warned_about(
    shared: Path, tmp_path: Path, planted: str
) -> None:
    """A directory ``nobody`` owns (0755), or a link of theirs they can point anywhere:
    they can delete, rename or forge captures as in a world-writable one."""
    sticky = shared / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    theirs = sticky / "theirs"
    as_nobody("mkdir", "-m", "755", str(theirs))
    captures = theirs
    if planted == "link":
        captures = sticky / "captures"
        as_nobody("ln", "-s", str(theirs), str(captures))
    with (
        scripted_server(greet_and_wait) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path, "--captures", str(captures)) as relay,
    ):
        log = relay.log_text()
    assert '"captures.shared_directory"' in log and "nobody" in log, log
