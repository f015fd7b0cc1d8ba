"""Export the mail in captures: every message a client retrieved in full by RETR.

A message is the RETR body dot-unstuffed (RFC 1939 §3), byte for byte as the server held
it. It is named by its UIDL (RFC 1939 §7) when the same session listed one for that
message number, else by session id and number. Names are built from a safe alphabet only
(everything else, and every dot, is written as ``%XX``), files are created with
``O_EXCL | O_NOFOLLOW`` relative to the target directory's descriptor, so no UIDL, however
hostile, reaches outside it or overwrites a file.

TOP answers and RETR bodies cut off by the end of a stream are partial: they are counted
and skipped, or written with ``partial=True``, marked in the name and by an
``X-Pop3tap-Partial`` header line put first. A message retrieved more than once (the same
UIDL, in one capture or several) is written once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pop3tap.bodies import unstuff_body
from pop3tap.capture import Capture
from pop3tap.protocol import Direction, Exchange, Flag, Status, login_name, spec_of

__all__ = [
    "ExportError",
    "ExportStats",
    "FoundMessage",
    "export_messages",
    "find_messages",
    "safe_name",
]

Format = Literal["eml", "maildir", "mbox"]

_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+=-")
_MAX_NAME: Final = 180
_NUMBER_RE: Final = re.compile(r"[0-9]{1,10}")
_UIDL_LINE_RE: Final = re.compile(rb"([0-9]{1,10})[ \t]+([\x21-\x7e]{1,512})\r?\n?")
_FROM_LINE_RE: Final = re.compile(rb"^(>*From )", re.MULTILINE)


class ExportError(Exception):
    """The target cannot be written; the message is one line."""


@dataclass(frozen=True, slots=True)
class FoundMessage:
    """One message body found in a capture."""

    data: bytes
    session: str
    number: int
    uidl: str | None
    #: None for a complete RETR; else why it is partial (``TOP 1 0``, ``truncated RETR 3``).
    partial: str | None
    started_unix: float
    #: The mailbox (a UIDL is unique only within one mailbox): the upstream and
    #: ``("user", name)`` for a login the capture shows, else ``("session", id)``.
    mailbox: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, ...]:
        """What makes two retrievals the same message: the mailbox and UIDL, else the
        session and message number."""
        if self.uidl is not None:
            return ("uidl", *self.mailbox, self.uidl)
        return ("number", self.session, str(self.number))

    @property
    def name(self) -> str:
        """The file name stem (without any suffix), safe in any directory."""
        stem = self.uidl if self.uidl is not None else f"{self.session}-{self.number}"
        return safe_name(stem)


@dataclass(slots=True)
class ExportStats:
    """What an export did."""

    written: int = 0
    duplicates: int = 0
    already_there: int = 0
    partial_skipped: int = 0
    partial_written: int = 0
    paths: list[str] = field(default_factory=list)

    def describe(self, target: str) -> str:
        """One line for the user."""
        text = f"exported {self.written} message(s) to {target}"
        notes = []
        if self.duplicates:
            notes.append(f"{self.duplicates} duplicate retrieval(s) written once")
        if self.already_there:
            notes.append(f"{self.already_there} already there")
        if self.partial_written:
            notes.append(f"{self.partial_written} partial (marked)")
        if self.partial_skipped:
            notes.append(
                f"{self.partial_skipped} partial body(ies) skipped: TOP-only or truncated; "
                "--partial writes them"
            )
        return text + (f" ({'; '.join(notes)})" if notes else "")


def safe_name(text: str) -> str:
    """A file name from ``text``: letters, digits and ``_+=-`` kept, every other byte
    (dots, slashes, NUL, ``%`` included) as ``%XX``; long names end in a digest.

    The empty text becomes a lone ``%``, which no other text gives (every other ``%`` is
    followed by two hex digits), so two different UIDLs never share a file."""
    raw = text.encode("utf-8", "surrogateescape")
    name = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw) or "%"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(raw).hexdigest()[:16]
        name = f"{name[: _MAX_NAME - 17]}~{digest}"
    return name


def _uidls(exchanges: Iterable[Exchange], server: bytes) -> dict[int, str]:
    """Message number to UIDL, from the session's UIDL answers (RFC 1939 §7)."""
    found: dict[int, str] = {}
    for ex in exchanges:
        if ex.verb != "UIDL" or ex.status is not Status.OK:
            continue
        if ex.multiline:
            body, _done = unstuff_body(server[ex.response_start : ex.response_end])
            for line in body.splitlines(keepends=True):
                match = _UIDL_LINE_RE.fullmatch(line)
                if match:
                    found[int(match.group(1))] = match.group(2).decode("ascii")
        else:
            parts = ex.first_line.split()
            if len(parts) >= 3 and _NUMBER_RE.fullmatch(parts[1]):
                found[int(parts[1])] = parts[2]
    return found


def _logged_in_user(exchanges: Iterable[Exchange]) -> str | None:
    """The user whose login the server accepted: ``USER`` then ``PASS`` answered +OK, or
    ``APOP`` answered +OK (RFC 1939 §7). None when no such login is in the capture, as
    after a SASL ``AUTH`` (RFC 5034), whose user name is masked: two such sessions are
    not known to share a mailbox."""
    named: str | None = None
    for ex in exchanges:
        if ex.verb == "USER":
            named = login_name(ex.verb, ex.args) if ex.status is Status.OK else None
        elif ex.verb == "PASS" and ex.status is Status.OK:
            return named
        elif ex.verb == "APOP" and ex.status is Status.OK:
            return login_name(ex.verb, ex.args)
        elif ex.verb == "AUTH" and ex.status is Status.OK:
            return None
    return None


def find_messages(capture: Capture) -> Iterator[FoundMessage]:
    """Every RETR and TOP body of one capture, complete or partial, in order."""
    server = capture.stream(Direction.SERVER)
    exchanges = capture.exchanges()
    uidls = _uidls(exchanges, server)
    user = _logged_in_user(exchanges)
    mailbox = (
        (capture.header.upstream, "user", user)
        if user is not None
        else (capture.header.upstream, "session", capture.header.session)
    )
    for ex in exchanges:
        if not spec_of(ex.verb).reads_message or ex.status is not Status.OK or not ex.multiline:
            continue
        words = ex.args.split()
        if not words or not _NUMBER_RE.fullmatch(words[0]):
            continue
        number = int(words[0])
        body, terminated = unstuff_body(server[ex.response_start : ex.response_end])
        partial: str | None = None
        if ex.verb == "TOP":
            partial = f"TOP {ex.args}"
        elif not terminated or Flag.TRUNCATED in ex.flags:
            partial = f"truncated RETR {number}"
        yield FoundMessage(
            data=body,
            session=capture.header.session,
            number=number,
            uidl=uidls.get(number),
            partial=partial,
            started_unix=capture.header.started_unix,
            mailbox=mailbox,
        )


def _marked(message: FoundMessage) -> bytes:
    """A partial message with ``X-Pop3tap-Partial`` as its first header line."""
    eol = b"\r\n" if b"\r\n" in message.data[:4096] or not message.data else b"\n"
    reason = (message.partial or "").encode("ascii", "replace")
    return b"X-Pop3tap-Partial: " + reason + eol + message.data


def _open_dir(path: Path, *, create: bool) -> int:
    """A descriptor of a real directory (created 0700 if missing); never a symlink, and
    never one another user controls: its owner, or anyone when it is world-writable
    without the sticky bit, could swap or delete the messages written. (Group-writable is
    accepted: with a umask of 002 a user's own directories are, for a private group.)"""
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ExportError(f"{path}: cannot use as a directory: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = None
    if info.st_uid != os.geteuid():
        problem = "owned by another user"
    elif info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        problem = "writable by other users"
    if problem is not None:
        os.close(fd)
        raise ExportError(f"{path}: {problem}; refusing to export mail into it")
    return fd


def _create(dir_fd: int, name: str, data: bytes) -> tuple[str, bool]:
    """Create ``name`` in ``dir_fd`` holding ``data``: the name used, and False when a
    file with the same content was already there. Taken names get ``-2``, ``-3``... first."""
    base, dot, suffix = name.partition(".")
    for attempt in range(1, 1000):
        candidate = name if attempt == 1 else f"{base}-{attempt}{dot}{suffix}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(candidate, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            if _same_content(dir_fd, candidate, data):
                return candidate, False
            continue
        except OSError as exc:
            raise ExportError(f"cannot create {candidate}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise ExportError(f"cannot write {candidate}: {exc.strerror or exc}") from None
        return candidate, True
    raise ExportError(f"cannot create {name}: every variant of the name is taken")


def _same_content(dir_fd: int, name: str, data: bytes) -> bool:
    """Whether ``name`` is a regular file holding exactly ``data``. Opened without
    blocking and checked before reading: a FIFO or directory planted under the name is
    simply a different file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return False
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return False
    with os.fdopen(fd, "rb") as f:
        return f.read(len(data) + 1) == data


def _mbox_entry(message: FoundMessage, data: bytes) -> bytes:
    """One mboxrd entry: a ``From`` line, LF line ends, ``>From`` quoting, a blank line."""
    when = time.asctime(time.gmtime(message.started_unix))
    text = data.replace(b"\r\n", b"\n")
    text = _FROM_LINE_RE.sub(rb">\1", text)
    if not text.endswith(b"\n"):
        text += b"\n"
    return b"From pop3tap@localhost " + when.encode("ascii") + b"\n" + text + b"\n"


def select_messages(
    captures: Iterable[Capture], *, partial: bool, stats: ExportStats
) -> Iterator[FoundMessage]:
    """The messages to write: complete ones once each, partial ones only when asked and
    only when no complete retrieval of the same message exists."""
    complete: dict[tuple[str, ...], FoundMessage] = {}
    partials: dict[tuple[str, ...], FoundMessage] = {}
    order: dict[tuple[str, ...], None] = {}
    for capture in captures:
        for message in find_messages(capture):
            key = message.key
            if message.partial is None:
                if key in complete:
                    stats.duplicates += 1
                    continue
                complete[key] = message
            elif key not in partials:
                partials[key] = message
            order.setdefault(key)
    for key in order:
        if key in complete:
            yield complete[key]
        elif partial:
            yield partials[key]
        else:
            stats.partial_skipped += 1


def export_messages(
    captures: Iterable[Capture], fmt: Format, target: Path, *, partial: bool = False
) -> ExportStats:
    """Write the captures' messages as ``.eml`` files, a Maildir or an mbox file.

    Raises:
        ExportError: the target cannot be created or written.
    """
    stats = ExportStats()
    messages = select_messages(captures, partial=partial, stats=stats)
    if fmt == "mbox":
        _export_mbox(messages, target, stats)
        return stats
    dir_fd = _open_dir(target, create=True)
    try:
        if fmt == "eml":
            for message in messages:
                data = message.data if message.partial is None else _marked(message)
                suffix = ".eml" if message.partial is None else ".partial.eml"
                _count(stats, message, *_create(dir_fd, message.name + suffix, data))
        else:
            _export_maildir(messages, target, dir_fd, stats)
    finally:
        os.close(dir_fd)
    return stats


def _count(stats: ExportStats, message: FoundMessage, name: str, created: bool) -> None:
    if not created:
        # The same bytes under the same name: written earlier in this run (the same
        # message seen under two mailbox keys), or by an earlier export.
        if name in stats.paths:
            stats.duplicates += 1
        else:
            stats.already_there += 1
        return
    stats.paths.append(name)
    if message.partial is None:
        stats.written += 1
    else:
        stats.partial_written += 1


def _export_maildir(
    messages: Iterable[FoundMessage], target: Path, dir_fd: int, stats: ExportStats
) -> None:
    """Maildir delivery: write into tmp/, then link into new/ (never replacing a file)."""
    fds: dict[str, int] = {}
    try:
        for sub in ("tmp", "new", "cur"):
            with contextlib.suppress(FileExistsError):
                os.mkdir(sub, 0o700, dir_fd=dir_fd)
            fds[sub] = _open_dir(target / sub, create=False)
        for message in messages:
            data = message.data if message.partial is None else _marked(message)
            name = message.name if message.partial is None else f"{message.name}.partial"
            tmp_name = f"{os.getpid()}.{name}"
            # An existing file with the same content: a leftover of an interrupted run.
            written, _created = _create(fds["tmp"], tmp_name, data)
            try:
                final = _link_new(fds["tmp"], written, fds["new"], name, data)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(written, dir_fd=fds["tmp"])
            _count(stats, message, f"new/{final[0]}", final[1])
    finally:
        for fd in fds.values():
            os.close(fd)


def _link_new(tmp_fd: int, tmp_name: str, new_fd: int, name: str, data: bytes) -> tuple[str, bool]:
    for attempt in range(1, 1000):
        candidate = name if attempt == 1 else f"{name}-{attempt}"
        try:
            os.link(tmp_name, candidate, src_dir_fd=tmp_fd, dst_dir_fd=new_fd)
        except FileExistsError:
            if _same_content(new_fd, candidate, data):
                return candidate, False
            continue
        except OSError as exc:
            raise ExportError(f"cannot deliver {candidate}: {exc.strerror or exc}") from None
        return candidate, True
    raise ExportError(f"cannot deliver {name}: every variant of the name is taken")


def _open_mbox(target: Path) -> int:
    """The mbox file opened for appending: created 0600, or an existing regular file of
    this user. Opened without blocking, so a FIFO planted under the name (with someone
    reading it, or not) is refused before a byte of mail goes anywhere."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(target, flags, 0o600)
    except OSError as exc:
        raise ExportError(f"{target}: cannot open mbox: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_uid != os.geteuid():
        problem = "owned by another user"
    if problem is not None:
        os.close(fd)
        raise ExportError(f"{target}: {problem}; refusing to append mail to it")
    os.set_blocking(fd, True)
    return fd


def _export_mbox(messages: Iterable[FoundMessage], target: Path, stats: ExportStats) -> None:
    fd = _open_mbox(target)
    try:
        with os.fdopen(fd, "ab") as f:
            for message in messages:
                data = message.data if message.partial is None else _marked(message)
                f.write(_mbox_entry(message, data))
                _count(stats, message, message.name, True)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write mbox: {exc.strerror or exc}") from None
