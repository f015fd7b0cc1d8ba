"""The AUTHORIZATION state of the mailbox model (RFC 1939 §4, §7; CAPA, RFC 2449 §5;
STLS, RFC 2595 §4; AUTH, RFC 5034 with PLAIN, RFC 4616, LOGIN and CRAM-MD5, RFC 2195):
who the client is, checked against a known password where there is one, and the lock on
the maildrop (RFC 2449 §8.1.2 IN-USE).
"""


from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable

from pop3tap.model._reply import Display, Next, Phase, Reply, SessionBase
from pop3tap.model._store import ModelStore
from pop3tap.protocol import SECRET_PLACEHOLDER

#: LOGIN's two challenges ("Username:", "Password:" in base64), as most servers send them.
_LOGIN_CHALLENGES = (b"+ VXNlcm5hbWU6\r\n", b"+ UGFzc3dvcmQ6\r\n")


def _sasl_credentials(mechanism: str, answers: list[bytes]) -> tuple[str | None, str | None]:
    """(user, password) from PLAIN (RFC 4616 §2) or LOGIN answers; (None, None) otherwise."""
    try:
        decoded = [base64.b64decode(a, validate=True) for a in answers]
    except (binascii.Error, ValueError):
        return None, None
    if mechanism == "PLAIN" and decoded:
        fields = decoded[0].split(b"\0")
        if len(fields) == 3:
            return fields[1].decode("utf-8", "replace"), fields[2].decode("utf-8", "replace")
        return None, None
    if mechanism == "LOGIN" and len(decoded) == 2:
        return decoded[0].decode("utf-8", "replace"), decoded[1].decode("utf-8", "replace")
    return None, None


_NO_MAILBOX = ModelStore.NO_MAILBOX


class Authorization(SessionBase):
    """USER/PASS, APOP, AUTH, CAPA and STLS before the login."""

    def _authorization(
        self, verb: str, args: bytes, shown: Display, recorded: Reply | None
    ) -> Reply:
        if verb == "CAPA":
            return self._recorded_capa(recorded) or self._capa(shown)
        if verb == "NOOP" and recorded is not None:
            return recorded
        if verb == "QUIT":
            self.phase = Phase.DONE
            return self._ok(self.wording.quit, shown, Next.CLOSE)
        if verb == "USER":
            if not args.strip():
                return self._err(self.wording.no_user, shown)
            self.user = args.strip().decode("utf-8", "replace")
            return recorded or self._ok(self.wording.user, shown)
        if verb == "PASS":
            if self.user is None:
                return self._err(self.wording.not_logged_in, shown)
            return self._login(self.user, lambda known: args == known.encode(), shown)
        if verb == "APOP":
            return self._apop(args, shown)
        if verb == "AUTH":
            return self._auth(args, shown)
        if verb == "STLS":
            if self.tls_up or not self.store.tls_available:
                return self._err("STLS is not available.", shown)
            return self._ok(self.wording.stls, shown, Next.START_TLS)
        return self._err(self.wording.not_logged_in, shown)

    def _recorded_capa(self, recorded: Reply | None) -> Reply | None:
        """The recorded CAPA, unless it offers STLS this server cannot do (or the reverse)."""
        if recorded is None:
            return None
        offered = b"\nSTLS\r\n" in recorded.data or b"\nSTLS\n" in recorded.data
        return recorded if offered == (self.store.tls_available and not self.tls_up) else None

    def _capa(self, shown: Display) -> Reply:
        lines = self.mailbox.capabilities
        if lines is None:
            lines = [b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"USER", b"SASL PLAIN LOGIN"]
            lines.append(b"IMPLEMENTATION pop3tap-model")
        offer_stls = self.store.tls_available and not self.tls_up
        shown_lines = [line for line in lines if line.split()[:1] != [b"STLS"] or offer_stls]
        if offer_stls and b"STLS" not in [line.split()[0] for line in shown_lines]:
            shown_lines.append(b"STLS")
        return self._multi("", b"\r\n".join(shown_lines) + b"\r\n", shown)

    def _login(self, user: str, check: Callable[[str], bool], shown: Display) -> Reply:
        """Finish a login for ``user`` (RFC 1939 §7): password, mailbox, lock."""
        key, known = self.store.credentials(user)
        if key is _NO_MAILBOX or (known is not None and not check(known)):
            self.user = None
            return self._err(self.wording.login_failed, shown)
        if not self.store.lock(key):
            # RFC 2449 §8.1.2: the maildrop is in use by another session.
            self.user = None
            return self._err(self.wording.in_use, shown)
        self.locked = True
        self.key = key
        self.mailbox, self.messages, self.generation = self.store.open(key)
        self.phase = Phase.TRANSACTION
        return self._ok(self.wording.login, shown)

    def _apop(self, args: bytes, shown: Display) -> Reply:
        parts = args.split()
        stamp = self.apop_stamp
        if len(parts) != 2 or stamp is None:
            return self._err(self.wording.login_failed, shown)
        user = parts[0].decode("utf-8", "replace")

        def digest_matches(password: str) -> bool:
            expected = hashlib.md5(stamp + password.encode(), usedforsecurity=False).hexdigest()
            return hmac.compare_digest(expected.encode(), parts[1].lower())

        return self._login(user, digest_matches, shown)

    def _auth(self, args: bytes, shown: Display) -> Reply:
        parts = args.split(None, 1)
        if not parts:
            mechanisms = sorted(self.mailbox.mechanisms or {"PLAIN", "LOGIN"})
            body = b"".join(m.encode() + b"\r\n" for m in mechanisms)
            return self._multi("", body, shown)
        mechanism = parts[0].decode("ascii", "replace").upper()
        offered = self.mailbox.mechanisms or {"PLAIN", "LOGIN"}
        if mechanism not in offered:
            return self._err("Unsupported authentication mechanism.", shown)
        self._sasl_mechanism = mechanism
        self._sasl_answers = []
        if mechanism == "PLAIN":
            self._sasl_challenges = [b"+ \r\n"]
        elif mechanism == "CRAM-MD5":
            # RFC 2195 §2: the challenge is a timestamp-like string, base64-encoded.
            self._sasl_challenges = [b"+ " + base64.b64encode(self._cram_challenge()) + b"\r\n"]
        elif mechanism == "LOGIN":
            self._sasl_challenges = list(_LOGIN_CHALLENGES)
        else:
            self._sasl_challenges = list(self.mailbox.challenges.get(mechanism, [b"+ \r\n"]))
        if len(parts) == 2:
            # An initial response (RFC 5034 §4) answers the first challenge.
            return self._sasl_answer(parts[1], skip_first=True)
        self.phase = Phase.SASL
        return Reply(self._sasl_challenges[0], Next.READ, False, shown)

    def _sasl_answer(self, line: bytes, *, skip_first: bool = False) -> Reply:
        shown = Display.fixed(
            f"AUTH {self._sasl_mechanism} {SECRET_PLACEHOLDER}"
            if skip_first
            else SECRET_PLACEHOLDER
        )
        self.phase = Phase.AUTHORIZATION
        if line.strip() == b"*":
            return self._err(self.wording.auth_aborted, shown)
        self._sasl_answers.append(line.strip())
        if len(self._sasl_answers) < len(self._sasl_challenges):
            self.phase = Phase.SASL
            challenge = self._sasl_challenges[len(self._sasl_answers)]
            return Reply(challenge, Next.READ, False, shown)
        if self._sasl_mechanism == "CRAM-MD5":
            return self._cram_login(shown)
        user, password = _sasl_credentials(self._sasl_mechanism, self._sasl_answers)
        if user is None:
            if self._sasl_mechanism in ("PLAIN", "LOGIN"):
                return self._err(self.wording.login_failed, shown)
            user = self.store.default_user()
        return self._login(user, lambda known: password is None or password == known, shown)

    def _cram_challenge(self) -> bytes:
        stamp = self.apop_stamp
        return stamp if stamp is not None else b"<pop3tap.model@localhost>"

    def _cram_login(self, shown: Display) -> Reply:
        """RFC 2195 §2: ``user hex(HMAC-MD5(password, challenge))``."""
        try:
            answer = base64.b64decode(self._sasl_answers[0], validate=True)
        except (binascii.Error, ValueError):
            return self._err(self.wording.login_failed, shown)
        user, _space, digest = answer.decode("utf-8", "replace").rpartition(" ")
        if not user:
            return self._err(self.wording.login_failed, shown)
        challenge = self._cram_challenge()

        def digest_matches(password: str) -> bool:
            expected = hmac.new(password.encode(), challenge, "md5").hexdigest()
            return hmac.compare_digest(expected, digest.lower())

        return self._login(user, digest_matches, shown)
