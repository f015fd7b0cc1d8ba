"""Fault injection with real clients: poplib and curl against a faulted replay, and the relay
in front of the test Dovecot (the server gets exactly the client's bytes, never a QUIT)."""

from __future__ import annotations

import hashlib
import poplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from clients import running_relay
from conftest import _require_binary
from dovecot import Dovecot, Mailbox

from pop3tap.capture import CloseRecord, EventRecord
from pop3tap.certs import CA_CERT_FILE, init_ca
from pop3tap.faults import FaultError
from pop3tap.relay import Endpoint, RelayConfig, TlsConfig
from pop3tap.replay import replay_server

ROOT = Path(__file__).resolve().parents[1]
PIPELINED = ROOT / "captures" / "pipelined.p3cap"
USER = "dave"  # the user of captures/pipelined.p3cap


def _login(host: str, port: int, timeout: float = 30) -> poplib.POP3:
    client = poplib.POP3(host, port, timeout=timeout)
    client.user(USER)
    client.pass_("secret")
    return client


def _message(n: int) -> bytes:
    with replay_server(PIPELINED, model=True) as server:
        client = _login(server.host, server.port)
        body = b"\r\n".join(client.retr(n)[1]) + b"\r\n"
        client.quit()
    return body


# --------------------------------------------------------------------------- replay + poplib


def test_err_on_login_reaches_poplib_with_the_response_code() -> None:
    with replay_server(PIPELINED, model=True, faults=['PASS:err="[IN-USE] Mailbox locked"']) as s:
        client = poplib.POP3(s.host, s.port, timeout=30)
        client.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\] Mailbox locked"):
            client.pass_("x")
        client.quit()


def test_err_in_byte_replay_takes_the_place_of_the_recorded_answer() -> None:
    with replay_server(PIPELINED, faults=['STAT:err="[SYS/TEMP] busy"']) as s:
        client = _login(s.host, s.port)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] busy"):
            client.stat()


def test_greeting_fault_refuses_the_connection() -> None:
    with (
        replay_server(PIPELINED, faults=['greeting:err="[SYS/TEMP] maintenance"']) as s,
        pytest.raises(poplib.error_proto, match="maintenance"),
    ):
        poplib.POP3(s.host, s.port, timeout=30)


def test_stall_leaves_the_client_to_its_timeout() -> None:
    with replay_server(PIPELINED, model=True, faults=["RETR:stall"]) as s:
        client = _login(s.host, s.port, timeout=0.5)
        with pytest.raises(TimeoutError):
            client.retr(1)


def test_reset_and_close_end_the_connection() -> None:
    with replay_server(PIPELINED, model=True, faults=["RETR 1:reset", "RETR 2:close"]) as s:
        client = _login(s.host, s.port)
        with pytest.raises(ConnectionResetError):
            client.retr(1)
        client = _login(s.host, s.port)
        with pytest.raises(poplib.error_proto, match="EOF"):
            client.retr(2)


def test_garble_keeps_the_size_and_changes_the_bytes() -> None:
    original = _message(3)
    with replay_server(PIPELINED, model=True, faults=["RETR 3:garble,seed=4"]) as s:
        client = _login(s.host, s.port)
        got = b"\r\n".join(client.retr(3)[1]) + b"\r\n"
        assert len(got) == len(original) and got != original
        assert client.stat()[0] == 3  # the session goes on
        client.quit()


def test_unsolicited_line_then_close() -> None:
    spec = 'LIST:unsolicited="-ERR [SYS/TEMP] Server shutting down"'
    with replay_server(PIPELINED, model=True, faults=[spec]) as s:
        client = _login(s.host, s.port)
        with pytest.raises(poplib.error_proto, match="shutting down"):
            client.list()
        with pytest.raises((poplib.error_proto, OSError)):
            client.noop()


def test_delay_and_slow_hold_the_answer_back() -> None:
    """Lower bounds only: a fault can never make an answer arrive sooner."""
    message = _message(2)
    with replay_server(
        PIPELINED, model=True, faults=["RETR 1:delay=400ms", "RETR 2:slow=2KiB/s"]
    ) as s:
        client = _login(s.host, s.port)
        started = time.monotonic()
        client.retr(1)
        assert time.monotonic() - started >= 0.4
        started = time.monotonic()
        client.retr(2)
        assert time.monotonic() - started >= (len(message) - 2048 * 0.05) / 2048
        client.quit()


def test_faults_change_at_runtime() -> None:
    with replay_server(PIPELINED, model=True) as s:
        client = _login(s.host, s.port)
        assert client.stat()[0] == 3
        s.add_fault('STAT:err="[SYS/TEMP] now failing"')
        with pytest.raises(poplib.error_proto, match="now failing"):
            client.stat()
        s.clear_faults()
        assert client.stat()[0] == 3
        client.quit()
        with pytest.raises(FaultError):
            s.add_fault("STAT:explode")


def test_the_nth_occurrence_is_the_one_hit() -> None:
    with replay_server(PIPELINED, model=True, faults=["RETR#2:close"]) as s:
        client = _login(s.host, s.port)
        client.retr(3)
        with pytest.raises(poplib.error_proto, match="EOF"):
            client.retr(3)


# --------------------------------------------------------------------------- replay + curl


def _curl_retr_1(spec: str) -> subprocess.CompletedProcess[bytes]:
    """curl fetching message 1 from a model replay with ``spec``."""
    with replay_server(PIPELINED, model=True, faults=[spec]) as s:
        url = f"pop3://{s.host}:{s.port}/1"
        return subprocess.run(
            [_require_binary("curl"), "-q", "-sS", url, "-u", f"{USER}:x"],
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.mark.realpeer
@pytest.mark.parametrize(
    ("spec", "exit_code"),
    [
        ("RETR 1:reset", 56),  # CURLE_RECV_ERROR
        ("RETR 1:close", 56),
        ('RETR 1:err="[SYS/TEMP] busy"', 8),  # CURLE_WEIRD_SERVER_REPLY
        ('RETR 1:unsolicited="-ERR bye"', 8),
    ],
)
def test_curl_sees_the_fault(spec: str, exit_code: int) -> None:
    result = _curl_retr_1(spec)
    assert result.returncode == exit_code, result.stderr


@pytest.mark.realpeer
def test_curl_does_not_notice_a_cut_body() -> None:
    """A finding the fault makes visible: curl reports success for a RETR cut mid-body
    (no terminating dot line), so a caller cannot tell it from a short message."""
    result = _curl_retr_1("RETR 1:cut=120")
    assert result.returncode == 0
    assert len(result.stdout) < len(_message(1))


# --------------------------------------------------------------------------- relay + Dovecot


class _Tee:
    """A TCP forwarder in front of the upstream that keeps every byte the server received."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.received = bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if to_server:
                    with self.lock:
                        self.received += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@contextmanager
def _faulted_relay(
    dovecot: Dovecot, tmp_path: Path, *faults: str, rewrite: bool = False
) -> Iterator[tuple[object, _Tee]]:
    tee = _Tee((dovecot.host, dovecot.pop3_port))
    try:
        with running_relay(
            "127.0.0.1", tee.port, tmp_path, faults=faults, fault_rewrite=rewrite
        ) as relay:
            yield relay, tee
    finally:
        tee.close()


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.mark.realpeer
def test_relay_cut_in_retr_leaves_the_mailbox_alone(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    with _faulted_relay(dovecot, tmp_path, "RETR 2:cut=100") as (relay, tee):
        sock = socket.create_connection((relay.host, relay.port), timeout=30)  # type: ignore[attr-defined]
        sent = f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\nDELE 1\r\nRETR 2\r\n".encode()
        file = sock.makefile("rb")
        file.readline()
        received = bytearray()
        for line in sent.splitlines(keepends=True):
            sock.sendall(line)
            if line.startswith(b"RETR"):
                while chunk := file.read(1):
                    received += chunk
            else:
                received += file.readline()
        sock.close()
        _wait_for(lambda: not relay.server.active_sessions)  # type: ignore[attr-defined]
        capture = relay.only_capture()  # type: ignore[attr-defined]
    stuffed_retr = received.split(b"Marked to be deleted.\r\n", 1)[1]
    assert len(stuffed_retr) == 100
    assert bytes(tee.received) == sent  # exactly the client's bytes: no QUIT
    assert dovecot.message_count(mailbox.user) == len(mailbox.messages)
    faults = [r for r in capture.records if isinstance(r, EventRecord) and r.name == "fault"]
    assert [(r.fields["seq"], r.fields["spec"]) for r in faults] == [(4, "RETR 2:cut=100")]
    (close,) = [r for r in capture.records if isinstance(r, CloseRecord)]
    assert close.reason == "fault: cut after 100 octets"
    shown = subprocess.run(
        [sys.executable, "-m", "pop3tap", "show", str(capture.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    retr_line = shown.index("[tx] RETR 2")
    assert shown.index("Fault injected into exchange #4: RETR 2:cut=100") > retr_line


@pytest.mark.realpeer
def test_relay_delay_adds_to_the_recorded_latency(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    def retr_seconds(*faults: str) -> float:
        with _faulted_relay(dovecot, tmp_path / str(len(faults)), *faults) as (relay, _tee):
            client = poplib.POP3(relay.host, relay.port, timeout=30)  # type: ignore[attr-defined]
            client.user(mailbox.user)
            client.pass_(mailbox.password)
            started = time.monotonic()
            client.retr(1)
            elapsed = time.monotonic() - started
            client.quit()
        return elapsed

    plain = retr_seconds()
    delayed = retr_seconds("RETR:delay=600ms")
    assert delayed - plain >= 0.6 * 0.9, (plain, delayed)


@pytest.mark.realpeer
def test_relay_seeded_faults_hit_the_same_exchanges(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    def hits(run: int) -> list[int]:
        with _faulted_relay(dovecot, tmp_path / str(run), "NOOP:delay=1ms,p=0.4,seed=11") as (
            relay,
            _tee,
        ):
            client = poplib.POP3(relay.host, relay.port, timeout=30)  # type: ignore[attr-defined]
            client.user(mailbox.user)
            client.pass_(mailbox.password)
            for _ in range(25):
                client.noop()
            client.quit()
            _wait_for(lambda: not relay.server.active_sessions)  # type: ignore[attr-defined]
            capture = relay.only_capture()  # type: ignore[attr-defined]
        return [
            r.fields["seq"]
            for r in capture.records
            if isinstance(r, EventRecord) and r.name == "fault"
        ]

    first = hits(1)
    assert first == hits(2) and 0 < len(first) < 25


@pytest.mark.realpeer
def test_relay_err_needs_fault_rewrite(dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path) -> None:
    for spec in ('PASS:err="[IN-USE] no"', "RETR:garble", 'STAT:unsolicited="-ERR bye"'):
        with pytest.raises(FaultError, match="fault-rewrite"):
            RelayConfig(upstream=Endpoint("127.0.0.1", 1), faults=(spec,))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pop3tap",
                "record",
                "--upstream",
                "127.0.0.1:1",
                "--fault",
                spec,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and "--fault-rewrite" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    with _faulted_relay(dovecot, tmp_path, 'PASS:err="[IN-USE] Mailbox locked"', rewrite=True) as (
        relay,
        tee,
    ):
        client = poplib.POP3(relay.host, relay.port, timeout=30)  # type: ignore[attr-defined]
        client.user(mailbox.user)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            client.pass_(mailbox.password)
        client.quit()
        _wait_for(lambda: b"QUIT\r\n" in tee.received)
    # The server got the client's own bytes, the QUIT the client sent included.
    assert bytes(tee.received) == (
        f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\nQUIT\r\n".encode()
    )


@pytest.mark.realpeer
def test_a_faulted_recording_replays_with_the_same_fault(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    with _faulted_relay(dovecot, tmp_path, "RETR:cut=50") as (relay, _tee):
        client = poplib.POP3(relay.host, relay.port, timeout=30)  # type: ignore[attr-defined]
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        with pytest.raises(poplib.error_proto):
            client.retr(1)
        _wait_for(lambda: not relay.server.active_sessions)  # type: ignore[attr-defined]
        capture = relay.only_capture()  # type: ignore[attr-defined]
    with replay_server(capture.path) as s:
        client = poplib.POP3(s.host, s.port, timeout=30)
        client.user(mailbox.user)
        client.pass_("masked anyway")
        with pytest.raises(poplib.error_proto):
            client.retr(1)
    digest = hashlib.sha256(capture.stream("s2c")).hexdigest()
    assert digest  # the capture keeps every byte the server sent


@pytest.mark.realpeer
def test_relay_garble_never_changes_a_status_word(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    """Dovecot answers USER and NOOP with a bare ``+OK``: garble may change a body, never the
    status indicator a client reads first (RFC 1939 §3)."""
    faults = ("USER:garble,seed=3", "NOOP:garble,seed=3", "RETR:garble,seed=3")
    with _faulted_relay(dovecot, tmp_path, *faults, rewrite=True) as (relay, tee):
        sock = socket.create_connection((relay.host, relay.port), timeout=30)  # type: ignore[attr-defined]
        file = sock.makefile("rb")
        file.readline()
        statuses = []
        for command in (f"USER {mailbox.user}", f"PASS {mailbox.password}", "NOOP", "RETR 1"):
            sock.sendall(command.encode() + b"\r\n")
            statuses.append(file.readline())
            if command == "RETR 1":
                while file.readline() != b".\r\n":
                    pass
        sock.sendall(b"QUIT\r\n")
        statuses.append(file.readline())
        file.close()
        sock.close()
        _wait_for(lambda: not relay.server.active_sessions)  # type: ignore[attr-defined]
    assert [s.split(b" ", 1)[0].rstrip() for s in statuses] == [b"+OK"] * 5, statuses
    assert tee.received.endswith(b"RETR 1\r\nQUIT\r\n")


@pytest.mark.realpeer
def test_relay_never_claims_a_fault_on_the_stls_answer(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    """TLS starts right after STLS's ``+OK`` (RFC 2595 §4), where the relay switches legs and
    cannot act on the answer: an STLS fault is refused up front, and ``*`` passes STLS by
    instead of recording a fault that never happened (a replay would inject it)."""
    with pytest.raises(FaultError, match="STLS"):
        RelayConfig(upstream=Endpoint("127.0.0.1", 1), faults=("STLS:close",))
    init_ca(tmp_path / "ca")
    trust = ssl.create_default_context(cafile=str(tmp_path / "ca" / CA_CERT_FILE))
    tls = TlsConfig(ca_dir=tmp_path / "ca", upstream_ca=dovecot.ca_pem_path)
    with running_relay(
        dovecot.host, dovecot.pop3_port, tmp_path / "captures", tls=tls, faults=("*:delay=1ms",)
    ) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        assert client.stls(trust).startswith(b"+OK")
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        client.quit()
        _wait_for(lambda: not relay.server.active_sessions)
        capture = relay.only_capture()
    faults = [
        r.fields["seq"] for r in capture.records if isinstance(r, EventRecord) and r.name == "fault"
    ]
    assert faults == [1, 3, 4, 5]  # CAPA, USER, PASS, QUIT: STLS (#2) passed by


@pytest.mark.parametrize("command", ["record", "replay"])
@pytest.mark.parametrize("spec", ["RETR:cut=10,times=1", "RETR:close,p=0.5,seed=3"])
def test_server_wide_fault_counts_are_refused_with_workers(command: str, spec: str) -> None:
    """``times=`` counts over the whole server and ``p=`` is seeded per connection number;
    ``--workers`` runs processes that each count and number alone, so ``times=1`` would
    inject once per worker and a seed would not repeat: refused in one line."""
    target = ["--upstream", "127.0.0.1:1"] if command == "record" else [str(PIPELINED)]
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pop3tap", command, *target),
            *("--listen", "127.0.0.1:0", "--workers", "2", "--fault", spec),
        ],
        capture_output=True,
        text=True,
        timeout=120,  # a guard: today's code starts serving instead of refusing
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--workers" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_fault_dropped_with_the_pairing_is_not_replayed(tmp_path: Path) -> None:
    """The relay records a fault when the command is seen; if the pairing is lost before
    its answer, a ``fault_dropped`` record says it never happened, and replay ignores it."""
    from pop3tap.capture import CaptureWriter
    from pop3tap.replay import load_sessions

    def capture(dropped: bool) -> Path:
        writer = CaptureWriter.create(
            tmp_path, session_id="abcdef01234" + str(int(dropped)), header_fields={}
        )
        writer.write_data("s2c", 0.0, b"+OK hi\r\n")
        writer.write_data("c2s", 0.1, b"NOOP\r\n")
        writer.write_event("fault", 0.1, seq=1, spec="NOOP:close")
        if dropped:
            writer.write_event("fault_dropped", 0.15, seq=1, spec="NOOP:close")
        writer.write_data("s2c", 0.2, b"+OK\r\n")
        writer.close(0.3, "client closed")
        return writer.path

    (kept,), _ = load_sessions(capture(dropped=False))
    (ignored,), _ = load_sessions(capture(dropped=True))
    assert kept.exchanges[0].fault == "NOOP:close"
    assert ignored.exchanges[0].fault is None
