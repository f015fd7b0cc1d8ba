"""Logging in from the console: CAPA, STLS (RFC 2595 §4), PASS (RFC 1939 §7), APOP
(RFC 1939 §7) and AUTH (RFC 5034), with every secret taken from a
:class:`~pop3tap.console._secrets.SecretSource` and masked where it is shown.
"""

from __future__ import annotations

from collections.abc import Callable

from pop3tap.console._exchange import (
    ConsoleBase,
    Outcome,
)
from pop3tap.console._link import ConsoleError
from pop3tap.console._render import (
    BodyPreview,
    describe_capabilities,
    terminal_safe,
)
from pop3tap.console._secrets import (
    SASL_MECHANISMS,
    SecretError,
    apop_digest,
    b64,
    cram_md5_response,
    plain_response,
)
from pop3tap.protocol import SECRET_PLACEHOLDER, Credential, spec_of


def _secret_usage(verb: str) -> str:
    """How to type a secret-bearing command here: the words before its secret (the
    command table's ``secret_after``), without the secret itself."""
    spec = spec_of(verb)
    words = [verb]
    if spec.names_user and spec.secret_after is not None:
        words.append("NAME")  # APOP name digest (RFC 1939 §7)
    if spec.credential is Credential.SASL:
        words.append("MECHANISM")  # AUTH mechanism initial-response (RFC 5034 §4)
    return " ".join(words)


def _decode_challenge(data: bytes) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


class LoginCommands(ConsoleBase):
    """CAPA, STLS, PASS, APOP and AUTH."""

    def _capa(self, *, typed: bool, show_all: bool) -> Outcome:
        answer = self._command(b"CAPA", "CAPA", typed=typed)
        if not answer.ok:
            self.capabilities = []
            if not typed:
                self.display.note("the server has no CAPA (RFC 2449): capabilities unknown")
            return Outcome.ERR
        preview = BodyPreview(keep_lines=1000 if show_all else 200)
        self.link.read_body(preview.feed, "inside the CAPA answer")
        self.capabilities = list(preview.kept)
        self.display.note("capabilities:")
        for text in describe_capabilities(self.capabilities):
            self.display.server(text)
        return Outcome.OK

    def _stls(self, *, typed: bool) -> Outcome:
        if self.link.tls is not None:
            self.display.error("this connection already uses TLS; STLS not sent")
            return Outcome.REFUSED
        answer = self._command(b"STLS", "STLS", typed=typed)
        if not answer.ok:
            if not typed:
                self.abandon("STLS refused")
                raise ConsoleError(
                    "the server refused STLS; not going on without TLS (drop --starttls "
                    "to talk to it in plaintext)"
                )
            return Outcome.ERR
        dropped = self.link.start_tls()
        if dropped:
            self.display.note(
                f"the server sent {dropped} bytes after its +OK to STLS, before TLS; "
                "they were dropped (RFC 2595 §4)"
            )
        self.display.note(f"TLS is up{self._tls_text()}")
        # RFC 2595 §4: capabilities learnt before TLS must be asked again.
        self._capa(typed=False, show_all=False)
        return Outcome.OK

    def _tls_text(self) -> str:
        tls = self.link.tls
        if tls is None:
            return " (no TLS)" if not self.starttls else " (plaintext until STLS)"
        # The server chooses its certificate's subject: escape sequences and all.
        subject = terminal_safe(str(tls.get("peer_subject")))
        cert = "" if self.link.config.insecure else f"; verified certificate {subject}"
        if self.link.config.insecure:
            cert = f"; certificate {subject} NOT verified (--insecure)"
        return f" ({tls.get('version')}, {tls.get('cipher')}{cert})"

    def _ask_password(self) -> str | None:
        try:
            password = self.secrets.password(self.user)
        except SecretError as exc:
            self.display.error(str(exc))
            return None
        if password is None:
            self.display.note("cancelled; nothing was sent")
            return None
        if any(c in password for c in "\r\n\0"):
            self.display.error("the password holds CR, LF or NUL; it cannot be sent")
            return None
        return password

    def _pass(self, *, typed: bool) -> Outcome:
        """PASS with the password from the secret source (RFC 1939 §7)."""
        password = self._ask_password()
        if password is None:
            return Outcome.REFUSED
        answer = self._command(
            b"PASS " + password.encode("utf-8"), f"PASS {SECRET_PLACEHOLDER}", typed=typed
        )
        return Outcome.OK if answer.ok else Outcome.ERR

    def _apop(self, words: list[str]) -> Outcome:
        """APOP name digest, the digest made from the greeting's timestamp (RFC 1939 §7)."""
        if len(words) != 1:
            self.display.error("usage: APOP NAME (the password is asked without echo)")
            return Outcome.REFUSED
        if self.apop_timestamp is None:
            self.display.error("the greeting has no APOP timestamp: this server offers no APOP")
            return Outcome.REFUSED
        self.user = words[0]
        password = self._ask_password()
        if password is None:
            return Outcome.REFUSED
        digest = apop_digest(self.apop_timestamp, password)
        answer = self._command(
            f"APOP {words[0]} {digest}".encode(),
            f"APOP {words[0]} {SECRET_PLACEHOLDER}",
            typed=False,
        )
        return Outcome.OK if answer.ok else Outcome.ERR

    def _auth(self, mechanism: str) -> Outcome:
        """AUTH with PLAIN, LOGIN or CRAM-MD5, answering each challenge (RFC 5034 §4)."""
        mech = mechanism.upper()
        if mech not in SASL_MECHANISMS:
            self.display.error(
                f"the console answers {', '.join(SASL_MECHANISMS)}; "
                "AUTH alone lists what the server offers"
            )
            return Outcome.REFUSED
        user = self.user
        if not user:
            self.display.error(f"AUTH {mech} needs a user name first: USER NAME, or --user")
            return Outcome.REFUSED
        password = self._ask_password()
        if password is None:
            return Outcome.REFUSED
        steps: list[Callable[[bytes], bytes]]
        if mech == "PLAIN":
            steps = [lambda _c: plain_response(user, password)]
        elif mech == "LOGIN":
            steps = [lambda _c: b64(user.encode()), lambda _c: b64(password.encode())]
        else:
            steps = [lambda c: cram_md5_response(user, password, _decode_challenge(c))]
        answer = self._command(f"AUTH {mech}".encode(), f"AUTH {mech}", typed=True, sasl=True)
        while answer.status == "+":
            if steps:
                response = steps.pop(0)(answer.line[2:])
                answer = self._command(response, SECRET_PLACEHOLDER, typed=False, sasl=True)
            else:  # more challenges than the mechanism has: cancel (RFC 5034 §4)
                answer = self._command(b"*", "*", typed=False, sasl=True)
        return Outcome.OK if answer.ok else Outcome.ERR
