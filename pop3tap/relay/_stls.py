"""The STLS gate: the one place the relay acts on what it parses (RFC 2595 §4).

Synchronous and free of I/O. Once the client's ``STLS`` line is seen (with interception
on), client bytes after it are held until the server answers; a ``-ERR`` releases them, a
``+OK`` marks the switch point, up to which the server's bytes are forwarded before both
legs turn to TLS. Without interception the session goes on encrypted end to end; client
bytes after the ``+OK`` that do not open a TLS record are plaintext injected into what
the server takes as its TLS stream: they are forwarded (the relay stays transparent) but
go through a secret masker before anything records them.
"""

from __future__ import annotations

from collections.abc import Callable

from pop3tap.protocol import CommandSent, Exchange, SecretMasker, StartTls, Status

#: The first byte of a TLS handshake record (RFC 8446 §5.1, ContentType handshake).
TLS_HANDSHAKE_RECORD = 0x16


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
        #: Masks plaintext injected after a passed-through STLS (None: none seen yet).
        self._injected: SecretMasker | None = None
        #: Client bytes after a passed-through STLS seen so far (to tell TLS from plaintext).
        self._after_switch = 0
        #: The client's masker at a passed-through switch: injected plaintext continues
        #: the line (and any AUTH) the client had begun before the ``+OK``.
        self._switch_masker: SecretMasker | None = None

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

    def on_start_tls(self, event: StartTls, masker: SecretMasker | None = None) -> bool:
        """The server accepted STLS; True when pop3tap intercepts it. ``masker``: the
        client's masker at the switch, which masks plaintext injected after it."""
        if self.intercept:
            self.switch = event
            return True
        self.passed_through = event
        self._switch_masker = masker
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
        if self._injected is None:
            if self._after_switch == 0 and data and data[0] == TLS_HANDSHAKE_RECORD:
                self._after_switch += len(data)
                return False
            if self._after_switch:
                return False
            masker = self._switch_masker or SecretMasker(distrusted=True)
            masker.distrust()
            self._injected = masker
        self._after_switch += len(data)
        return True

    def mask_injected(self, data: bytes, at: float) -> list[tuple[float, bytes]]:
        """Injected plaintext with PASS, APOP digests and SASL data masked, in order."""
        masker = self._injected
        assert masker is not None
        out = masker.mask(data, at)
        # Taken after every chunk, so what mask() released now follows what it returned.
        released = masker.take_released()
        return [(at, out), *released] if out else released

    def end_injected(self) -> list[tuple[float, bytes]]:
        """The session ends: injected lines still held come out masked."""
        masker = self._injected
        if masker is None:
            return []
        masker.end_of_stream()
        masker.abandon()
        return masker.take_released()
