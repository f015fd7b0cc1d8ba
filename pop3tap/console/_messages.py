"""The console's message commands: RETR previews, the ``headers`` and ``save`` helpers,
and DELE marks that QUIT names before anything is deleted (RFC 1939 §6).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pop3tap.console._exchange import (
    PREVIEW_LINES,
    ConsoleBase,
    Outcome,
)
from pop3tap.console._render import (
    BodyPreview,
    HeaderSummary,
    parse_message_number,
    summarize_headers,
    terminal_safe,
)


def _publish(temp: str, target: Path) -> None:
    """Give the finished file its name without ever replacing an existing file."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links: rename, having checked the name is free.
        if os.path.lexists(target):
            raise FileExistsError(str(target)) from None
        os.rename(temp, target)


class MessageCommands(ConsoleBase):
    """RETR previews, headers, save, DELE marks."""

    def _retr_preview(self, line: str, number: int) -> Outcome:
        """RETR N: the headers, the size and the first lines (``--all`` shows the rest)."""
        answer = self._command(line.encode("utf-8", "surrogateescape"), line, typed=True)
        if not answer.ok:
            return Outcome.ERR
        preview = BodyPreview(keep_lines=PREVIEW_LINES, message=True)
        self.link.read_body(preview.feed, f"inside message {number}")
        headers = summarize_headers(bytes(preview.head))
        info = self._info(number)
        info.size, info.headers = preview.size, headers
        self.display.note(
            f"message {number}: {preview.size} octets, {preview.lines} lines "
            f"({preview.head_lines} header lines)"
        )
        self._show_headers(headers)
        for text in preview.kept:
            self.display.server(text)
        if preview.more_lines:
            self.display.note(
                f"{preview.more_lines} more lines: RETR {number} --all shows them, "
                f"save {number} FILE writes the whole message"
            )
        return Outcome.OK

    def _show_headers(self, headers: HeaderSummary) -> None:
        for name, value in (
            ("From", headers.sender),
            ("To", headers.to),
            ("Subject", headers.subject),
            ("Date", headers.date),
        ):
            if value or name != "To":
                self.display.server(f"  {name + ':':<9}{value}")

    def _lookup(self, number: int, *, typed: bool) -> Outcome:
        """Learn the size (LIST N) and headers (TOP N 0) of a message."""
        info = self._info(number)
        if info.size is None:
            answer = self._command(f"LIST {number}".encode(), f"LIST {number}", typed=False)
            if not answer.ok:
                return Outcome.ERR
            self._learn("LIST", [str(number)], answer)
        answer = self._command(f"TOP {number} 0".encode(), f"TOP {number} 0", typed=False)
        if not answer.ok:
            return Outcome.ERR
        preview = BodyPreview(keep_lines=0, message=True)
        self.link.read_body(preview.feed, f"inside the headers of message {number}")
        info.headers = summarize_headers(bytes(preview.head))
        return Outcome.OK

    def _headers(self, rest: str) -> Outcome:
        number = parse_message_number(rest.strip())
        if number is None:
            self.display.error("usage: headers N (a message number)")
            return Outcome.REFUSED
        outcome = self._lookup(number, typed=True)
        if outcome is not Outcome.OK:
            return outcome
        info = self._info(number)
        assert info.headers is not None
        self.display.note(f"message {number}: {info.size} octets")
        self._show_headers(info.headers)
        return Outcome.OK

    def _save(self, rest: str) -> Outcome:
        """save N FILE: RETR N written exactly (dot-unstuffed, line ends as sent) to FILE."""
        number_text, _, name = rest.strip().partition(" ")
        number = parse_message_number(number_text)
        name = name.strip()
        if number is None or not name:
            self.display.error("usage: save N FILE")
            return Outcome.REFUSED
        target = Path(name).expanduser()
        if os.path.lexists(target):
            self.display.error(f"{target} exists; not overwritten (choose another name)")
            return Outcome.REFUSED
        try:
            fd, temp = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
        except OSError as exc:
            self.display.error(f"cannot write {target}: {exc.strerror}")
            return Outcome.REFUSED
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                answer = self._command(f"RETR {number}".encode(), f"RETR {number}", typed=False)
                if not answer.ok:
                    return Outcome.ERR

                failure: OSError | None = None

                def sink(piece: bytes, _line_start: bool) -> None:
                    # After a failed write the rest of the message is still read: left in
                    # the connection, it would be taken for the next command's answer.
                    nonlocal written, failure
                    if failure is not None:
                        return
                    try:
                        out.write(piece)
                    except OSError as exc:
                        failure = exc
                        return
                    written += len(piece)

                self.link.read_body(sink, f"inside message {number}")
                if failure is not None:
                    raise failure
            _publish(temp, target)
        except FileExistsError:
            self.display.error(f"{target} appeared meanwhile; not overwritten")
            return Outcome.REFUSED
        except OSError as exc:
            self.display.error(f"cannot write {target}: {exc.strerror or exc}")
            return Outcome.REFUSED
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        self._info(number).size = written
        self.display.note(f"saved message {number} ({written} octets) to {target}")
        return Outcome.OK

    def _dele(self, line: str, words: list[str]) -> Outcome:
        """DELE N marks the message (RFC 1939 §6); its subject and size are learnt first."""
        number = parse_message_number(words[0]) if len(words) == 1 else None
        if number is not None and number not in self.marks:
            info = self._info(number)
            if info.size is None or info.headers is None:
                self.display.note(f"looking up message {number} before marking it")
                self._lookup(number, typed=False)
        answer = self._command(line.encode("utf-8", "surrogateescape"), line, typed=True)
        if not answer.ok:
            return Outcome.ERR
        if number is None:
            # The server accepted a DELE the console cannot read as one message number:
            # whatever it marked, QUIT would delete, so it counts as a mark all the same.
            self.odd_marks.append(" ".join(words))
            self.display.note(
                "the server accepted that DELE; it is counted as a mark "
                "(QUIT asks first; RSET unmarks, Ctrl-D leaves without deleting)"
            )
        else:
            self.marks[number] = self._info(number)
            self.display.note(
                f"message {number} is marked; the server deletes it only at QUIT "
                "(RSET unmarks, Ctrl-D leaves without deleting)"
            )
        return Outcome.OK

    def _show_marks(self) -> None:
        if not self.has_marks:
            self.display.note("no messages are marked for deletion")
            return
        count = len(self.marks) + len(self.odd_marks)
        self.display.note(f"{count} message{'s' if count > 1 else ''} marked for deletion at QUIT:")
        for number in sorted(self.marks):
            self.display.server(self.marks[number].describe())
        for argument in self.odd_marks:
            self.display.server(f"{'?':>5}  accepted: DELE {terminal_safe(argument)}".rstrip())
