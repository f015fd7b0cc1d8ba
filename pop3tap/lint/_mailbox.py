"""The mailbox rules of ``pop3tap lint``: what STAT, LIST, UIDL and RETR say about the
maildrop must agree with itself and, for unique ids, with earlier captures of the same
mailbox (RFC 1939 §5 and §7).

:class:`MailboxRules` is a part of :class:`~pop3tap.lint._session.SessionLinter`: it
keeps the message numbers, sizes and unique ids the session has seen, never the bodies.
"""

from __future__ import annotations

from pop3tap.analysis import BodyFacts
from pop3tap.lint._report import (
    MAX_FINDINGS_PER_RULE,
    CaptureReport,
    Finding,
    MailboxMemory,
    quote_rx,
    quote_tx,
)
from pop3tap.lint._rules import Side
from pop3tap.protocol import Exchange, Flag, Status, counts_as_login, login_name


class MailboxRules:
    """The mailbox half of :class:`~pop3tap.lint._session.SessionLinter`, and how a
    finding is added. The linter's ``__init__`` sets the state declared here."""

    report: CaptureReport
    _memory: MailboxMemory
    _upstream: str
    _authenticated: bool
    _after_user: bool
    _caps: dict[str, str] | None
    _deleted: set[int]
    _epoch: int
    _stat: tuple[int, int, int, Exchange] | None
    _list: tuple[dict[int, int], int, Exchange] | None
    _sizes: dict[int, int]
    _total: int | None
    _uids: dict[int, str]
    _uid_seq: dict[int, int]
    _digests: dict[int, str]
    _user: str | None
    _dele_ok: Exchange | None

    def add(
        self,
        rule: str,
        message: str,
        ex: Exchange | None = None,
        *,
        seq: int | None = None,
        side: Side | None = None,
    ) -> None:
        """Add a finding (or count it once the rule has MAX_FINDINGS_PER_RULE)."""
        report = self.report
        if sum(1 for f in report.findings if f.rule == rule) >= MAX_FINDINGS_PER_RULE:
            report.suppressed[rule] = report.suppressed.get(rule, 0) + 1
            return
        report.findings.append(
            Finding(
                rule=rule,
                message=message,
                seq=seq if ex is None else ex.seq,
                tx=None if ex is None else quote_tx(ex),
                rx=None if ex is None else quote_rx(ex),
                side=side,
            )
        )

    def _auth_refused(self, ex: Exchange) -> None:
        parts = ex.args.split(" ", 1)
        mechanism = parts[0].upper()
        if not mechanism or self._caps is None:
            return
        advertised = self._caps.get("SASL", "").upper().split()
        code = (ex.resp_code or "").split("/", 1)[0]
        # With an initial response a -ERR may judge the credentials; only an uncoded
        # refusal, or one before any data was sent, refuses the mechanism itself.
        if mechanism in advertised and (len(parts) == 1 or code == ""):
            self.add(
                "auth-mechanism-refused",
                f"CAPA advertised SASL {mechanism} but AUTH {mechanism} was refused "
                "without a challenge",
                ex,
            )

    # ------------------------------------------------------------------ state

    def _track(self, ex: Exchange, body: BodyFacts | None, number: int | None) -> None:
        verb = ex.verb
        ok = ex.status is Status.OK
        if verb == "USER":
            self._after_user = ok
            if ok or self._user is None:
                self._user = ex.args.strip() or None
            return
        self._after_user = False
        if verb == "APOP":
            self._user = login_name(verb, ex.args)
        if verb == "AUTH" and ex.status is Status.ERR and not ex.sasl:
            self._auth_refused(ex)
        if ok and counts_as_login(verb, bool(ex.args.strip())):
            self._authenticated = True
            return
        if not ok:
            return
        if verb == "CAPA" and body is not None and body.listing is not None:
            self._caps = {}
            for line in body.listing:
                name, _, rest = line.decode("utf-8", "replace").partition(" ")
                self._caps[name.upper()] = rest
        elif verb == "STAT":
            parts = ex.first_line.split()
            if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
                count, size = int(parts[1]), int(parts[2])
                if self._total is None:
                    self._total = count + len(self._deleted)
                self._stat = (count, size, self._epoch, ex)
                self._compare_stat_list(ex)
        elif verb == "LIST" and body is not None and body.listing is not None:
            self._scan_listing(ex, body.listing)
        elif verb == "UIDL" and body is not None and body.listing is not None:
            self._uid_listing(ex, body.listing)
        elif verb == "UIDL" and number is not None:
            parts = ex.first_line.split()
            if len(parts) >= 3:
                self._check_uids(ex, {number: parts[2]})
        elif verb == "LIST" and number is not None:
            parts = ex.first_line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                self._sizes[number] = int(parts[2])
        elif verb == "DELE" and number is not None:
            self._deleted.add(number)
            self._epoch += 1
            self._dele_ok = self._dele_ok or ex
        elif verb == "RSET":
            self._deleted.clear()
            self._epoch += 1
            self._dele_ok = None
        elif verb == "RETR" and number is not None and body is not None:
            self._digests[number] = body.digest if Flag.TRUNCATED not in ex.flags else ""

    def _scan_listing(self, ex: Exchange, lines: tuple[bytes, ...]) -> None:
        sizes: dict[int, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
                continue
            number = int(parts[0])
            self._listed_number(ex, number, "LIST")
            sizes[number] = int(parts[1])
        self._sizes.update(sizes)
        self._list = (sizes, self._epoch, ex)
        self._compare_stat_list(ex)

    def _listed_number(self, ex: Exchange, number: int, what: str) -> None:
        if number < 1 or (self._total is not None and number > self._total):
            self.add(
                "msg-number-out-of-range",
                f"{what} lists message {number}; the maildrop has {self._total}",
                ex,
            )
        elif number in self._deleted:
            self.add("deleted-message-served", f"{what} lists deleted message {number}", ex)

    def _compare_stat_list(self, ex: Exchange) -> None:
        if self._stat is None or self._list is None:
            return
        count, size, stat_epoch, _ = self._stat
        sizes, list_epoch, _ = self._list
        if stat_epoch != list_epoch or stat_epoch != self._epoch:
            return
        listed_count, listed_size = len(sizes), sum(sizes.values())
        if (count, size) != (listed_count, listed_size):
            self.add(
                "stat-list-mismatch",
                f"STAT says {count} messages, {size} octets; LIST lists {listed_count}, "
                f"{listed_size} octets",
                ex,
            )
        self._stat = None  # one comparison per pair

    def _uid_listing(self, ex: Exchange, lines: tuple[bytes, ...]) -> None:
        uids: dict[int, str] = {}
        for line in lines:
            parts = line.split(b" ", 1)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            number = int(parts[0])
            self._listed_number(ex, number, "UIDL")
            uid_bytes = parts[1]
            bad = [b for b in uid_bytes if not 0x21 <= b <= 0x7E]
            if bad:
                self.add(
                    "uidl-bad-character",
                    f"the unique id of message {number} holds octet 0x{bad[0]:02x}",
                    ex,
                )
            if len(uid_bytes) > 70:
                self.add(
                    "uidl-too-long",
                    f"the unique id of message {number} is {len(uid_bytes)} octets (limit 70)",
                    ex,
                )
            uids[number] = uid_bytes.decode("utf-8", "backslashreplace")
        self._check_uids(ex, uids)

    def _check_uids(self, ex: Exchange, uids: dict[int, str]) -> None:
        owners: dict[str, int] = {v: k for k, v in self._uids.items()}
        for number, uid in sorted(uids.items()):
            other = owners.get(uid)
            if other is not None and other != number:
                self.add(
                    "uidl-not-unique", f"messages {other} and {number} share unique id {uid}", ex
                )
            owners[uid] = number
            self._uids[number] = uid
            self._uid_seq[number] = ex.seq
        del owners

    def _cross_capture(self) -> None:
        if self._user is None:
            return
        mailbox = (self._user, self._upstream)
        for number, digest in sorted(self._digests.items()):
            uid = self._uids.get(number)
            if uid is None or not digest:
                continue
            earlier = self._memory.remember(mailbox, digest, uid, self.report.path)
            if earlier is not None:
                self.report.findings.append(
                    Finding(
                        rule="uidl-changed",
                        message=f"message {number} has unique id {uid}; the same message had "
                        f"{earlier[0]} in {earlier[1]}",
                        seq=self._uid_seq.get(number),
                    )
                )
