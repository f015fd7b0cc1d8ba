"""Where the benchmarks keep captures, and what that file system costs by itself.

A recording relay creates one capture file per session, so the file system's cost of
creating a file is part of what a benchmark of ``pop3tap record`` measures. On ext4 without
a journal a file created within about a minute of many deletions costs 0.25 to 0.6 ms of
kernel CPU (the inode allocator passes over recently freed inodes), which is more than a
whole trio session's forwarding. A runner that deletes the ~1,800 captures of one mode right
before the next mode starts therefore measures its own clean-up. This module avoids that and
reports the file system next to the results:

- ``tmpfs``: every mode gets a fresh tmpfs mount (as root; otherwise a fresh directory in
  ``/dev/shm`` when that is a tmpfs), dropped when the mode is done;
- ``disk``: fresh directories in ``/var/tmp``, kept until the end of the run;
- any other value is a directory: fresh directories inside it, kept until the end of the run.

``probe`` measures, in the same run, what creating a small file and appending 64 KiB cost
there. Try it alone (``--after-deleting N`` first creates and deletes N files, to show the
deletion artifact)::

    python -m benchmarks.capturefs --captures-on disk --after-deleting 2000
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHOICES = ("tmpfs", "disk")
#: Where ``disk`` keeps its directories: persistent temporary files (FHS), not a tmpfs /tmp.
DISK_BASE = Path("/var/tmp")
SHM_BASE = Path("/dev/shm")
#: Upper bound of one mode's tmpfs; only what is written uses memory.
TMPFS_SIZE = "8g"
PROBE_FILES = 1000
PROBE_FILE_SIZE = 4096
PROBE_APPEND_SIZE = 64 * 1024
PROBE_APPEND_TOTAL = 32 * 1024 * 1024


def captures_on(value: str) -> str:
    """Argparse type for ``--captures-on``: ``tmpfs``, ``disk`` or an existing directory."""
    if value in CHOICES:
        return value
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty value is neither tmpfs, disk nor a directory")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither tmpfs, disk nor an existing directory"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{value!r} is not writable")
    return str(path.resolve())


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--captures-on",
        type=captures_on,
        default="tmpfs",
        metavar="{tmpfs,disk,PATH}",
        help="file system for the captures: a fresh tmpfs per mode (default), fresh "
        "directories in /var/tmp, or fresh directories in PATH; nothing is deleted "
        "while modes run",
    )


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_of(path: Path) -> dict[str, str]:
    """The mount holding ``path`` (from /proc/self/mountinfo): point, type, source, options."""
    target = os.path.realpath(path)
    best: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # The longest mount point wins; of equal ones the later line is mounted on top.
        if inside and len(point) >= len(best.get("mount_point", "")):
            best = {
                "mount_point": point,
                "fstype": tail[0],
                "source": tail[1],
                "options": f"{fields[5]},{tail[2]}",
            }
    return best


def statfs_type(path: Path) -> str:
    """``stat -f -c %T``: the file system type as statfs(2) reports it (ext4 is ext2/ext3)."""
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", str(path)],
            capture_output=True, text=True, check=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def has_journal(mount: dict[str, str]) -> bool | None:
    """For ext3/ext4: whether the device has a journal (jbd2 lists journalled devices)."""
    if mount.get("fstype") not in ("ext3", "ext4"):
        return None
    device = Path(mount.get("source", "")).name
    return any(Path("/proc/fs/jbd2").glob(f"{device}-*")) if device else None


def describe(path: Path) -> dict[str, Any]:
    mount = mount_of(path)
    journal = has_journal(mount)
    extra = {} if journal is None else {"journal": journal}
    return {"path": str(path), "statfs_type": statfs_type(path), **mount, **extra}


def probe(
    directory: Path,
    files: int = PROBE_FILES,
    file_size: int = PROBE_FILE_SIZE,
    append_total: int = PROBE_APPEND_TOTAL,
) -> dict[str, Any]:
    """Create+write+close ``files`` small files, then append 64 KiB slices to one file.

    No fsync, as a capture is written. Wall and CPU time (user+system of this process) per
    file, and MB/s and CPU s per GB of the appends. Nothing is deleted here: the files stay
    until the caller's directory goes, so the probe does not create the artifact it shows.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = os.urandom(file_size)
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(files):
        fd = os.open(directory / f"probe-{i:06d}.p3cap", flags, 0o600)
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
    create_wall, create_cpu = time.perf_counter() - t0, time.process_time() - c0
    chunk = os.urandom(PROBE_APPEND_SIZE)
    fd = os.open(directory / "probe-appends.p3cap", flags | os.O_APPEND, 0o600)
    written = 0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        while written < append_total:
            written += os.write(fd, chunk)
    finally:
        os.close(fd)
    append_wall, append_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        **describe(directory),
        "files": files,
        "file_size": file_size,
        "create_us_per_file": create_wall / max(files, 1) * 1e6,
        "create_cpu_us_per_file": create_cpu / max(files, 1) * 1e6,
        "append_size": PROBE_APPEND_SIZE,
        "append_octets": written,
        "append_mb_s": written / max(append_wall, 1e-9) / 1e6,
        "append_cpu_s_per_gb": append_cpu / (written / 1e9) if written else 0.0,
    }


def summary(p: dict[str, Any]) -> str:
    """One line for a probe result."""
    journal = ""
    if "journal" in p:
        journal = " with a journal" if p["journal"] else " without a journal"
    return (
        f"{p.get('fstype', p['statfs_type'])}{journal} (statfs {p['statfs_type']}) at "
        f"{p.get('mount_point', '?')}: create+write {p['file_size'] // 1024} KiB+close "
        f"{p['create_us_per_file']:.0f} us per file ({p['create_cpu_us_per_file']:.0f} us CPU), "
        f"{p['append_size'] // 1024} KiB appends {p['append_mb_s']:.0f} MB/s "
        f"({p['append_cpu_s_per_gb']:.2f} CPU s per GB)"
    )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class CaptureSpace:
    """Fresh capture directories for one benchmark run; nothing is deleted before ``close``.

    With ``tmpfs`` each ``fresh`` directory is its own tmpfs mount when the process may
    mount one (root), and ``release`` unmounts it at once: dropping a whole file system is
    not a deletion on a file system another mode uses, and it gives the memory back.
    """

    def __init__(self, choice: str, prefix: str) -> None:
        self.choice = choice
        self.notes: list[str] = []
        self._mounts: list[Path] = []
        self._names = itertools.count()
        self._previous_sigterm: Any = signal.SIG_DFL
        if choice == "tmpfs":
            self._root = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
            self.mounts = self._try_mount()
            if self.mounts:
                self.description = "tmpfs: a fresh tmpfs mount per mode"
            else:
                shutil.rmtree(self._root, ignore_errors=True)
                if mount_of(SHM_BASE).get("fstype") != "tmpfs":
                    raise SystemExit(
                        "--captures-on tmpfs: cannot mount a tmpfs (needs root) and "
                        f"{SHM_BASE} is not a tmpfs; use --captures-on PATH"
                    )
                self._root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=SHM_BASE))
                free = os.statvfs(SHM_BASE)
                self.description = (
                    f"tmpfs: fresh directories in {SHM_BASE} (cannot mount; "
                    f"{free.f_bavail * free.f_frsize // 2**20} MiB free there: if a full run "
                    "needs more, use --captures-on disk)"
                )
        else:
            self.mounts = False
            base = DISK_BASE if choice == "disk" else Path(choice)
            if not base.is_dir():
                base = Path(tempfile.gettempdir())
            self._root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))
            self.description = (
                f"{choice}: fresh directories in {base}, kept until the end of the run"
            )
        self.root_fs = describe(self._root)

    def _try_mount(self) -> bool:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return False
        test = self._root / "mount-test"
        test.mkdir()
        ok = self._mount(test)
        if ok:
            self._umount(test)
        test.rmdir()
        return ok

    @staticmethod
    def _mount(path: Path) -> bool:
        opts = f"size={TMPFS_SIZE},mode=0700,nosuid,nodev"
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "pop3tap-bench", str(path)],
            capture_output=True, check=False,
        )
        return proc.returncode == 0

    @staticmethod
    def _umount(path: Path) -> None:
        done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            # Still busy (a relay that did not exit yet): detach it now, freed when unused.
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)

    def fresh(self, name: str) -> Path:
        """A new empty directory (its own tmpfs when mounting works) named after ``name``."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        path = self._root / f"{next(self._names):02d}-{safe}"
        path.mkdir(mode=0o700)
        if self.mounts:
            if not self._mount(path):
                raise SystemExit(f"mounting a tmpfs on {path} failed")
            self._mounts.append(path)
        return path

    def release(self, path: Path) -> None:
        """Done with ``path``: a tmpfs mount goes now, and so does a directory in the
        ``/dev/shm`` fallback (tmpfs has no deletion artifact, and a container's
        ``/dev/shm`` may be small); other directories stay until ``close``."""
        if path in self._mounts:
            self._umount(path)
            self._mounts.remove(path)
        elif self.choice == "tmpfs":
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        for path in reversed(self._mounts):
            self._umount(path)
        self._mounts.clear()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> CaptureSpace:
        # SIGTERM unwinds like Ctrl-C, so the mounts and directories are removed.
        self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def report(self) -> dict[str, Any]:
        return {"choice": self.choice, "description": self.description, "root": self.root_fs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cost of creating capture files here")
    add_argument(parser)
    parser.add_argument("--files", type=int, default=PROBE_FILES)
    parser.add_argument(
        "--after-deleting", type=int, default=0, metavar="N",
        help="first create and delete N files on the same file system, as a runner that "
        "cleans up between modes does",
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with CaptureSpace(args.captures_on, "pop3tap-fsprobe") as space:
        print(space.description)
        results = []
        for rep in range(max(1, args.repeat)):
            if args.after_deleting:
                doomed = space.fresh(f"doomed-{rep}")
                probe(doomed, files=args.after_deleting, append_total=0)
                for path in doomed.iterdir():
                    path.unlink()
            result = probe(space.fresh(f"probe-{rep}"), files=args.files)
            results.append(result)
            print(summary(result))
        with contextlib.suppress(statistics.StatisticsError):
            med = statistics.median(r["create_cpu_us_per_file"] for r in results)
            print(f"median CPU per file created: {med:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
