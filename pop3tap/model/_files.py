"""Mailboxes from message files: a directory of ``.eml`` files, a Maildir, or an mbox.

A POP3 server does not parse mail: each file is served as its bytes, with line endings made
CRLF and lines dot-stuffed on the way out (RFC 1939 §3). Sizes are measured once at start
(what LIST reports is the CRLF size); bodies are read from disk on each RETR or TOP, so a
large mailbox costs no memory. Unique ids (RFC 1939 §7) come from the file names (the
Maildir unique name, the ``.eml`` name) or, in an mbox, the message's position.
"""

from __future__ import annotations

import errno
import hashlib
import mailbox as stdlib_mailbox
import os
import stat
from pathlib import Path

from pop3tap.model._mailbox import (
    Mailbox,
    MessageSource,
    ModelError,
    ModelMessage,
    Wording,
    crlf_size,
)

__all__ = ["mailbox_from_files"]

#: RFC 1939 §7: a unique id is 1 to 70 characters in the range 0x21 to 0x7E.
_MAX_UID = 70


def _uid_from_name(name: str, taken: set[str]) -> str:
    """A unique id from a file name: itself when it fits RFC 1939 §7, else a hash of it."""
    fits = 0 < len(name) <= _MAX_UID and all(0x21 <= ord(c) <= 0x7E for c in name)
    candidate = name if fits else ""
    if not candidate or candidate in taken:
        candidate = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:40]
        suffix = 1
        base = candidate
        while candidate in taken:
            candidate = f"{base}-{suffix}"
            suffix += 1
    taken.add(candidate)
    return candidate


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file, never through a symlink (O_NOFOLLOW).

    A directory others can write to could hold a link to a file only pop3tap's user may
    read; serving it would hand that file to any POP3 client. It could also hold a FIFO,
    whose open waits for a writer: the open does not wait (O_NONBLOCK, which changes
    nothing for a regular file) and anything but a regular file is refused.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)


def _read(path: Path) -> bytes:
    try:
        return _read_regular(path)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        raise ModelError(f"{path}: cannot read message file: {why}") from None


def _file_message(path: Path, uid: str) -> ModelMessage:
    size = crlf_size(_read(path))
    return ModelMessage(size=size, uid=uid, source=lambda: _read_regular(path))


def _eml_directory(directory: Path) -> list[ModelMessage]:
    taken: set[str] = set()
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".eml")
    if not files:
        raise ModelError(f"{directory}: no .eml files (and not a Maildir with cur/ and new/)")
    return [_file_message(path, _uid_from_name(path.stem, taken)) for path in files]


def _maildir(directory: Path) -> list[ModelMessage]:
    """Messages of a Maildir's new/ and cur/, oldest unique name first."""
    taken: set[str] = set()
    files: list[Path] = []
    for sub in ("new", "cur"):
        folder = directory / sub
        if folder.is_dir():
            files += [p for p in folder.iterdir() if not p.name.startswith(".")]
    files.sort(key=lambda p: p.name)
    # The unique name is the file name up to the info part (":2,S" or "!2,S").
    return [
        _file_message(path, _uid_from_name(path.name.split(":")[0].split("!")[0], taken))
        for path in files
    ]


def _mbox(path: Path) -> list[ModelMessage]:
    """Messages of an mbox file, read through the standard library's parser on demand."""
    try:
        with path.open("rb") as handle:
            if handle.read(5) != b"From ":
                raise ModelError(f"{path}: not an mbox file (it does not start with 'From ')")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read mbox: {exc.strerror or exc}") from None
    box = stdlib_mailbox.mbox(path, create=False)
    messages: list[ModelMessage] = []
    for index, key in enumerate(box.keys(), start=1):
        data = box.get_bytes(key)
        digest = hashlib.sha256(data).hexdigest()[:32]
        messages.append(
            ModelMessage(
                size=crlf_size(data), uid=f"{index}-{digest}", source=_mbox_reader(box, key)
            )
        )
    return messages


def _mbox_reader(box: stdlib_mailbox.mbox, key: str) -> MessageSource:
    return lambda: box.get_bytes(key)


def mailbox_from_files(path: Path, template: Mailbox | None = None) -> Mailbox:
    """A mailbox serving the messages at ``path``, with a capture's greeting and wording.

    ``template`` (a mailbox built from a capture) lends its greeting, capabilities, SASL
    mechanisms and wording; without it the model's defaults are used.

    Raises:
        ModelError: the path is missing, holds no messages, or a file cannot be read.
    """
    if not path.exists():
        raise ModelError(f"{path}: no such file or directory")
    if path.is_symlink() and not path.is_dir():
        raise ModelError(f"{path}: cannot read message file: a symbolic link")
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            messages = _maildir(path)
        else:
            messages = _eml_directory(path)
    elif path.is_file():
        messages = _mbox(path)
    else:
        raise ModelError(f"{path}: not a regular file, a directory of .eml files or a Maildir")
    if template is None:
        return Mailbox(user=None, messages=messages, wording=Wording(), sources=[str(path)])
    return Mailbox(
        user=None,
        messages=messages,
        greeting=template.greeting,
        capabilities=template.capabilities,
        wording=template.wording,
        has_last=template.has_last,
        mechanisms=set(template.mechanisms),
        sources=[str(path)],
    )
