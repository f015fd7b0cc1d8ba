"""Files that hold secrets, created and opened so that no other user can plant or read them.

The CA key, leaf keys, the TLS keylog and the log all decrypt or describe sessions. Another
user who can write where they live could plant a symbolic link (pop3tap would then write
the secret into a file of theirs), pre-create the file (it would stay theirs, readable by
them) or swap in a CA of their own. So:

* a new file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600; a file that
  is replaced (the CA) is written under a temporary name from :mod:`secrets` in the same
  directory, then renamed over the old one (a rename replaces a link, never follows it);
* an existing file is opened with ``O_NOFOLLOW`` and checked on its descriptor: a regular
  file, owned by the user pop3tap runs as, writable by nobody else (readable by others
  only where it is public, as the CA certificate is);
* a directory pop3tap keeps secrets in (the CA directory) is created 0700, and an existing
  one must be owned by the user and writable by nobody else; pop3tap tightens its own
  directory to 0700;
* anything else is refused with one line naming the path, the problem and the fix
  (:class:`UnsafePathError`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = [
    "UnsafePathError",
    "check_parent_not_shared",
    "create_private_dir",
    "open_private_append",
    "owner_name",
    "read_owned_file",
    "shared_writable",
    "write_private_file",
]

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
#: Names of this process's own descriptors: links, but nothing another user planted.
_OWN_DESCRIPTOR: Final = re.compile(r"/dev/(?:stdout|stderr|fd/\d+)|/proc/self/fd/\d+")


class UnsafePathError(Exception):
    """A path another user controls or could change; the message is one line with the fix."""


def owner_name(uid: int) -> str:
    """``name (uid N)`` for messages, or ``uid N`` when the user has no name."""
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def shared_writable(mode: int) -> bool:
    """Whether group or others may write (``mode`` from ``stat``)."""
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def _check_owned(path: Path, info: os.stat_result, what: str) -> None:
    me = os.geteuid()
    if info.st_uid != me:
        raise UnsafePathError(
            f"{what} {path} is owned by {owner_name(info.st_uid)}, not by {owner_name(me)}: "
            "remove it or choose a path you own"
        )
    if shared_writable(info.st_mode):
        fix = "700" if stat.S_ISDIR(info.st_mode) else "600"
        raise UnsafePathError(
            f"{what} {path} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): run `chmod {fix} {path}` or choose another path"
        )


def create_private_dir(
    path: Path, what: str, *, owns: Callable[[str], bool] = lambda _name: False
) -> None:
    """Make ``path`` (and missing parents) mode 0700, or check and tighten an existing one.

    An existing directory looser than 0700 is tightened only when every name in it is one
    pop3tap ``owns`` (or a dot file): pop3tap never changes the mode of a directory
    that is also used for something else (a home directory given by mistake); it refuses.

    Raises:
        UnsafePathError: it is a link, not a directory, owned by another user or writable
            by others.
        OSError: it cannot be created.
    """
    old = os.umask(0o077)
    try:
        with contextlib.suppress(FileExistsError):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
    finally:
        os.umask(old)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(
            f"{what} {path} is a symbolic link: use the real directory's path instead"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{what} {path} is not a directory: remove it or choose another")
    _check_owned(path, info, what)
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        foreign = [n for n in os.listdir(path) if not owns(n) and not n.startswith(".")]
        if foreign:
            raise UnsafePathError(
                f"{what} {path} is mode {mode:04o} and holds other files ({foreign[0]}...): "
                f"run `chmod 700 {path}` or use a directory of its own"
            )
        os.chmod(path, 0o700)  # ours, not shared-writable, only ours inside: tighten it


def check_parent_not_shared(path: Path, what: str) -> None:
    """Refuse a file whose directory others may write without the sticky bit.

    There another user could rename the file away and put a link in its place between
    two opens (the keylog is reopened by name for every TLS context).
    """
    parent = path.parent
    try:
        info = os.stat(parent)
    except OSError:
        return  # opening the file reports it
    if shared_writable(info.st_mode) and not info.st_mode & stat.S_ISVTX:
        raise UnsafePathError(
            f"{what} {path} is in a directory other users can write ({parent}, mode "
            f"{stat.S_IMODE(info.st_mode):04o}, not sticky): choose a path in a directory "
            "you own"
        )


def open_private_append(path: Path, what: str) -> int:
    """Open ``path`` for appending: created 0600 if new, else checked as ours and private.

    An existing file of ours that others may read is tightened to 0600.

    Raises:
        UnsafePathError: a link, not a regular file, another user's, or writable by others.
        OSError: it cannot be opened.
    """
    flags = os.O_WRONLY | os.O_APPEND | _CLOEXEC | _NOFOLLOW
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    if _OWN_DESCRIPTOR.fullmatch(str(path)) or _trusted_device_link(path):
        return os.open(path, os.O_WRONLY | os.O_APPEND | _CLOEXEC)  # /dev/stdout and the like
    try:
        # O_NONBLOCK: a FIFO left there must not hang the start until someone reads it.
        fd = os.open(path, flags | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(
                f"{what} {path} is a symbolic link: remove it or give the real file's path"
            ) from None
        raise exc
    try:
        os.set_blocking(fd, True)
        info = os.fstat(fd)
        if stat.S_ISCHR(info.st_mode) and info.st_uid in (0, os.geteuid()):
            return fd  # /dev/null, your own terminal: nothing is kept for others to read
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{what} {path} is not a regular file: choose another path")
        _check_owned(path, info, what)
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _trusted_device_link(path: Path) -> bool:
    """A link made by root or by us to a character device of root's or ours (/dev/stdout)."""
    try:
        link = os.lstat(path)
        if not stat.S_ISLNK(link.st_mode) or link.st_uid not in (0, os.geteuid()):
            return False
        target = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(target.st_mode) and target.st_uid in (0, os.geteuid())


def write_private_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with ``data``: a new file under a random name, renamed.

    Raises:
        OSError: the directory cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_owned_file(path: Path, what: str, *, private: bool) -> bytes:
    """Read a file that must be ours (not a link); ``private``: readable by us only.

    Raises:
        UnsafePathError: a link, not a regular file, another user's, or shared.
        OSError: it cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC | _NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(
                f"{what} {path} is a symbolic link: remove it and run `pop3tap ca init --force`"
            ) from None
        raise exc
    with open(fd, "rb") as f:
        os.set_blocking(fd, True)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{what} {path} is not a regular file")
        _check_owned(path, info, what)
        if private and stat.S_IMODE(info.st_mode) & 0o077:
            raise UnsafePathError(
                f"{what} {path} is readable by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}` "
                "(and consider the key compromised)"
            )
        return f.read()
