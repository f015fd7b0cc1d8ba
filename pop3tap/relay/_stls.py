"""The STLS gate: the one place the relay acts on what it parses (RFC 2595 §4).

Synchronous and free of I/O. Once the client's ``STLS`` line is seen (with interception
on), client bytes after it are held until the server answers; a ``-ERR`` releases them, a
``+OK`` marks the switch point, up to which the server's bytes are forwarded before both
legs turn to TLS. Without interception the session goes on encrypted end to end; client
bytes after the ``+OK`` that do not open a TLS record are plaintext injected into what
the server takes as its TLS stream: they are forwarded (the relay stays transparent), and
the recorder records them through the observer's entry for them
(:meth:`~pop3tap.protocol.SessionObserver.record_injected_client`), masked.
"""

from __future__ import annotations

from collections.abc import Callable

from pop3tap.protocol import TLS_HANDSHAKE_RECORD, CommandSent, Exchange, StartTls, Status


def _nothing() -> None:
    return None


class StlsGate:
    """Hold-back state for one session's STLS upgrade."""

    def __init__(self, *, intercept: bool) -> None:
        #: pop3tap does TLS with both sides itself after STLS (the default).
        self.intercept = intercept
        #: Client-stream offset just past a pending STLS line: later bytes are held.
        self.client_end: int | None = None
        #: The accepted STLS, while the pumps stop at its switch point (interception).
        self.switch: StartTls | None = None
        #: The accepted STLS without interception: what follows is TLS, or injected.
        self.passed_through: StartTls | None = None
        #: Called when a pending STLS is answered otherwise than ``+OK``.
        self.on_resolve: Callable[[], None] = _nothing
        #: Plaintext was sent after a passed-through STLS (decided by its first byte).
        self._injected = False
        #: Client bytes after a passed-through STLS seen so far (to tell TLS from plaintext).
        self._after_switch = 0

    @property
    def pending(self) -> bool:
        """An intercepted STLS waits for its answer: client bytes past it are held."""
        return self.client_end is not None

    def may_hold(self, data: bytes, client_line_open: bool) -> bool:
        """Whether a client chunk may complete an STLS line that must be intercepted
        (then it is parsed before it is forwarded)."""
        return self.intercept and (b"STLS" in data.upper() or client_line_open)

    # -- parser events -------------------------------------------------------------------

    def on_command(self, event: CommandSent) -> None:
        if event.verb == "STLS" and self.intercept:
            self.client_end = event.end

    def on_exchange(self, event: Exchange) -> None:
        if event.verb == "STLS" and event.status is not Status.OK:
            # -ERR (or no answer): the held client bytes go on, nothing changes.
            self.client_end = None
            self.on_resolve()

    def on_start_tls(self, event: StartTls) -> bool:
        """The server accepted STLS; True when pop3tap intercepts it."""
        if self.intercept:
            self.switch = event
            return True
        self.passed_through = event
        return False

    # -- forwarding ----------------------------------------------------------------------

    def hold(self, data: bytes, start: int) -> tuple[bytes, bytes]:
        """Split a parsed client chunk (stream offset ``start``) into what may be
        forwarded now and what waits for the STLS answer."""
        end = self.client_end
        if end is None:
            return data, b""
        cut = min(len(data), max(0, end - start))
        return data[:cut], data[cut:]

    def server_cut(self, data: bytes, start: int) -> int | None:
        """How much of a parsed server chunk goes out before the switch (None: all)."""
        switch = self.switch
        if switch is None:
            return None
        return min(len(data), max(0, switch.server_switch - start))

    def switched(self) -> None:
        """Both legs are TLS now: nothing is held any more."""
        self.client_end = None
        self.switch = None

    # -- pass-through --------------------------------------------------------------------

    def injected_plaintext(self, data: bytes) -> bool:
        """Whether client ``data`` (after a passed-through STLS) is plaintext, not TLS.

        The first byte after the switch decides: a TLS client opens with a handshake
        record; anything else is plaintext sent where the server expects TLS.
        """
        if self.passed_through is None or self.intercept:
            return False
        if not self._injected:
            if self._after_switch == 0 and data and data[0] == TLS_HANDSHAKE_RECORD:
                self._after_switch += len(data)
                return False
            if self._after_switch:
                return False
            self._injected = True
        self._after_switch += len(data)
        return True
