"""Byte replay on one connection: the recorded greeting, then recorded answers.

Each connection is given one recorded session (a ``SessionPicker`` decides which), gets its
greeting, and every client command is answered with the bytes a ``Matcher`` finds for it
(both in :mod:`pop3tap.replay._matching`). A command without a recorded answer
gets one ``-ERR`` line naming pop3tap and the command (masked: secrets and possible SASL
data never show, RFC 5034 §4), and a log event lists the closest recorded commands. Where
the recorded server closed the connection, the replay sends the recorded bytes up to that
point and closes too.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import trio

from pop3tap.capture import CloseReason
from pop3tap.faults import Fault, FaultAction
from pop3tap.protocol import Command, SaslLine, login_identity
from pop3tap.replay._connection import ReplayConnection
from pop3tap.replay._matching import Matcher, masked_command
from pop3tap.replay._recorded import RecordedExchange

if TYPE_CHECKING:
    from pop3tap.replay._server import ReplayServer

#: At most this many pre-login commands are remembered for a ``by_user`` switch.
_MAX_PRELOGIN = 64


class _SaslAnswer(enum.Enum):
    """How the client answered a SASL challenge (RFC 5034 §4)."""

    #: As recorded (or masked in the capture): the recorded exchange goes on.
    MATCHES = "matches"
    #: A kept answer that differs: the exchange got an ``-ERR``, the session goes on.
    DIFFERS = "differs"
    #: The client left.
    GONE = "gone"


class ByteReplayConnection(ReplayConnection):
    """One client of a byte replay server."""

    matcher: Matcher | None = None

    def __init__(self, server: ReplayServer, stream: trio.abc.Stream, number: int) -> None:
        super().__init__(server, stream, number)
        self.errors_in_a_row = 0
        self.prelogin: list[Command] = []
        self.user_chosen = False
        #: The recorded server closed the connection here (so close as it did).
        self.recorded_close = False

    def closes_with_reset(self) -> bool:
        return (
            self.recorded_close and self.matcher is not None and self.matcher.session.server_reset
        )

    def tls_started(self) -> None:
        """TLS came up after STLS: only the exchanges recorded inside TLS match now."""
        if self.matcher is not None:
            self.matcher.after_tls = True

    async def serve(self) -> None:
        """Pick a recorded session, send its greeting, answer commands."""
        index = self.server.picker.assign()
        if index is None:
            self.log.warning("replay.sessions_exhausted", sessions=len(self.server.sessions))
            self.reason = "no session left"
            await self.send_error("every recorded session was played already (--sessions once)")
            return
        matcher = self.matcher = Matcher(
            self.server.accounting,
            index,
            mode=self.config.match,
            listen_tls=bool(self.config.listen_tls),
        )
        session = matcher.session
        self.log.info(
            "replay.session.open", capture=session.name, recorded_session=session.session
        )
        if not await self.greet(session.greeting, self.fault_of_record(session.greeting_fault)):
            return
        if session.closes_after_greeting:
            self.reason = "recorded server closed after its greeting"
            self.recorded_close = True
            return
        while True:
            command = await self.next_line()
            if command is None:
                self.reason = CloseReason.CLIENT_CLOSED
                return
            assert isinstance(command, Command)  # no SASL line was asked for
            if self.config.by_user and not self.user_chosen:
                matcher = self.maybe_choose_session(matcher, command)
            if not await self.on_command(matcher, command):
                return

    async def on_command(self, matcher: Matcher, command: Command) -> bool:
        """Answer one command; False when the session ends."""
        ex = matcher.find(command)
        if ex is None:
            return not await self.no_answer(matcher, command)
        self.errors_in_a_row = 0
        matcher.mark(ex)
        if (ex.starts_tls or ex.tls_failed) and self.tls_up:
            # An implicit-TLS listener serving an STLS capture: no TLS inside TLS.
            self.log.warning("replay.stls_in_tls", capture=matcher.session.name)
            await self.send_error("STLS refused: this connection is already TLS")
            return True
        if not self.user_chosen and len(self.prelogin) < _MAX_PRELOGIN:
            self.prelogin.append(command)
        self.log.debug("replay.exchange", seq=ex.seq, command=ex.command)
        fault = self.faults.choose(command.verb, command.args) or self.fault_of_record(ex.fault)
        if not await self.answer(matcher, ex, fault):
            return False
        if ex.closes:
            self.reason = "recorded server closed here"
            self.recorded_close = True
            return False
        if ex.tls_failed:
            self.reason = "the recorded TLS handshake after STLS failed"
            return False
        if ex.starts_tls:
            return await self.upgrade()
        if command.verb == "QUIT" and ex.status is not None:
            self.reason = CloseReason.QUIT
            return False
        return True

    async def answer(self, matcher: Matcher, ex: RecordedExchange, fault: Fault | None) -> bool:
        """Send the recorded response; for AUTH, read a SASL line after each ``+``.

        A ``fault`` applies to the first part of the answer (the whole of it, or the
        first SASL challenge); where it lets the session go on, the rest is as recorded.
        """
        if not ex.segments:
            # The recorded server never answered this command: it closed the connection.
            self.reason = "recorded server closed without answering"
            self.recorded_close = True
            return False
        for number, segment in enumerate(ex.segments):
            if number == 0 and fault is not None:
                ended = await self.deliver(segment.data, fault, ex.seq, ex.command)
                if ended is not None:
                    self.reason = ended
                    return False
                if fault.action is FaultAction.ERR:
                    return True  # the -ERR took the place of the whole answer
            else:
                await self.send(segment)
            if number + 1 == len(ex.segments):
                break
            answered = await self.sasl_answer(matcher, ex, number)
            if answered is not _SaslAnswer.MATCHES:
                return answered is _SaslAnswer.DIFFERS
        return True

    async def sasl_answer(
        self, matcher: Matcher, ex: RecordedExchange, number: int
    ) -> _SaslAnswer:
        """Read the client's answer to challenge ``number`` (RFC 5034 §4); a kept answer
        that differs from the recorded one gets an ``-ERR`` instead of the rest."""
        self.reader.expect_sasl()
        sasl = await self.next_line()
        if sasl is None:
            self.reason = "client closed during SASL"
            return _SaslAnswer.GONE
        assert isinstance(sasl, SaslLine)  # the reader was told to expect one
        recorded = ex.sasl_lines[number] if number < len(ex.sasl_lines) else b""
        if matcher.sasl_line_matches(sasl.line, recorded):
            return _SaslAnswer.MATCHES
        what = f"{ex.command} (SASL answer {number + 1})"
        self.log.warning(
            "replay.no_match",
            capture=matcher.session.name,
            command=what,
            differs="SASL answer differs from the recorded one",
        )
        self.server.accounting.note_unmatched(
            matcher.session.name, what, ("SASL answer differs",)
        )
        await self.send_error(f'no recorded response for "{ex.command}" (SASL answer)')
        return _SaslAnswer.DIFFERS

    async def no_answer(self, matcher: Matcher, command: Command) -> bool:
        """Answer a command nothing was recorded for; True when the session must end.

        After an AUTH, a line that is not a known command with valid arguments may be SASL
        data: it is never echoed or logged (see :func:`masked_command`).
        """
        shown = masked_command(command.line, after_auth=command.after_auth)
        candidates = matcher.candidates(command, shown)
        self.server.accounting.note_unmatched(matcher.session.name, shown, tuple(candidates))
        self.log.warning(
            "replay.no_match",
            capture=matcher.session.name,
            command=shown,
            match=self.config.match,
            closest=candidates,
        )
        if self.config.match == "strict":
            self.reason = "strict match failed"
            await self.send_error(f'strict match failed: "{shown}" is not the next command')
            return True
        await self.send_error(f'no recorded response for "{shown}"')
        if command.verb == "QUIT":
            self.reason = "quit without a recorded answer"
            return True  # the client asked to end the session (RFC 1939 §6)
        self.errors_in_a_row += 1
        if self.errors_in_a_row >= self.config.max_errors:
            self.reason = "too many unmatched commands"
            await self.send_error("too many commands without a recorded response, closing")
            return True
        return False

    def maybe_choose_session(self, matcher: Matcher, command: Command) -> Matcher:
        """``by_user``: on the first USER/APOP/AUTH, move to the session of that user."""
        found = login_identity(command.verb, command.args)
        if found is None:
            return matcher
        user, mechanism = found
        self.user_chosen = True
        index = self.server.picker.for_user(user, mechanism, current=matcher.index)
        if index is None or index == matcher.index:
            return matcher
        self.log.info(
            "replay.by_user",
            user=user,
            capture=self.server.sessions[index].name,
            was=matcher.session.name,
        )
        self.matcher = matcher.switched(index, self.prelogin)
        return self.matcher

    async def finish(self) -> None:
        """Close, then log the session's end and what it left unplayed."""
        await self.close()
        if self.matcher is None:
            return
        unplayed = self.matcher.unplayed()
        fields: dict[str, Any] = {"capture": self.matcher.session.name, "reason": self.reason}
        if unplayed:
            self.log.warning("replay.session.close", unplayed=unplayed, **fields)
        else:
            self.log.info("replay.session.close", unplayed=[], **fields)
