"""``pop3tap import``: tcpdump files of real sessions become the captures the relay records.

The pcaps are made here by running tcpdump on the loopback interface around real curl and
poplib sessions against the test Dovecot through the relay; the relay's own captures of
the same sessions are the reference.
"""

from __future__ import annotations

import contextlib
import poplib
import random
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clients import RunningRelay, curl, running_relay
from dovecot import Dovecot, Mailbox
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import Capture, DataRecord, iter_capture_paths, read_capture
from pop3tap.cli import main
from pop3tap.pcap_import import PcapImportError, import_pcap, read_packets
from pop3tap.render import render_lines

scapy_all = pytest.importorskip("scapy.all")


def _require_tcpdump() -> str:
    from conftest import _require_binary

    return _require_binary("tcpdump")


def session_text(capture: Capture) -> list[str]:
    """The show view with bodies, without clock times and without the lines that name this
    particular recording (session id, upstream connection, close summary). The two
    "Connection closed" lines are sorted: which FIN came first races between the legs."""
    lines = []
    for line in render_lines(capture, bodies=True):
        text = line.split(" ", 2)[2]  # drop "POP3:" and HH:MM:SS
        if text.startswith("[db] Session ") or text.startswith("[db] Connected to upstream"):
            continue
        if text.startswith("[db] Closed:"):
            continue
        lines.append(text)
    closes = sorted(line for line in lines if line.startswith("[db] Connection closed"))
    return [line for line in lines if not line.startswith("[db] Connection closed")] + closes


def _loopback_snaplen() -> int:
    """The largest packet lo can hand tcpdump (its GSO limit), plus link-header room.

    With ``--immediate-mode`` libpcap gives every packet a ring slot of the snapshot length,
    so ``-s 0`` (256 KiB) leaves only a few hundred slots in the buffer and a burst of RETR
    packets while tcpdump waits for a CPU is dropped by the kernel. Slots the size of the
    largest possible packet hold every packet whole, four times as many of them.
    """
    try:
        gso = int(Path("/sys/class/net/lo/gso_max_size").read_text())
    except (OSError, ValueError):
        gso = 65536
    return max(gso, 65536) + 256


@contextlib.contextmanager
def tcpdump(path: Path, port: int) -> Iterator[None]:
    """``tcpdump -i lo -w path`` for TCP port ``port`` while the block runs."""
    binary = _require_tcpdump()
    proc = subprocess.Popen(
        [
            binary,
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            str(_loopback_snaplen()),
            "-B",
            "131072",
            "-Z",
            "root",
            "-w",
            str(path),
            f"tcp port {port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline().decode(errors="replace")
        assert "listening on" in banner, banner
        yield
    finally:
        time.sleep(0.2)  # the last ACKs and FINs reach the interface
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    # A pcap that misses packets is not the session; say so instead of a diff.
    counts = re.findall(
        rb"^(\d+) packets (captured|received by filter|dropped by kernel)", err, re.M
    )
    numbers = {kind: int(n) for n, kind in counts}
    assert numbers[b"dropped by kernel"] == 0, err.decode(errors="replace")


@dataclass
class Recorded:
    """A pcap of sessions through the relay, and the relay's own captures of them."""

    pcap: Path
    relay_captures: list[Capture]
    port: int
    mailbox: Mailbox


def wait_complete(relay: RunningRelay, count: int) -> list[Capture]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        paths = relay.capture_files()
        captures = [read_capture(p) for p in paths]
        if len(captures) >= count and all(c.complete for c in captures):
            return captures
        time.sleep(0.02)
    raise AssertionError(f"expected {count} complete captures")


@pytest.fixture(scope="module")
def recorded(
    dovecot: Dovecot, corpus: list[bytes], curl_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Recorded:
    """curl and poplib sessions through the relay, with tcpdump listening on lo."""
    work = tmp_path_factory.mktemp("pcap")
    box = dovecot.new_mailbox(corpus)
    pcap = work / "sessions.pcap"
    with running_relay(dovecot.host, dovecot.pop3_port, work / "captures") as relay:
        port = relay.port
        with tcpdump(pcap, port):
            url = f"pop3://{relay.host}:{relay.port}"
            curl(curl_path, f"{url}/2", "-u", f"{box.user}:{box.password}")
            curl(
                curl_path,
                url + "/",
                "-u",
                f"{box.user}:{box.password}",
                "--login-options",
                "AUTH=PLAIN",
            )
            client = poplib.POP3(relay.host, relay.port, timeout=30)
            client.user(box.user)
            client.pass_(box.password)
            client.stat()
            client.uidl()
            for number in range(1, len(box.messages) + 1):
                client.retr(number)
            client.top(1, 2)
            client.quit()
            wait_complete(relay, 3)
        captures = wait_complete(relay, 3)
    return Recorded(pcap=pcap, relay_captures=captures, port=port, mailbox=box)


def by_client(captures: list[Capture]) -> dict[str, Capture]:
    return {c.header.client: c for c in captures}


@pytest.mark.realpeer
def test_tcpdump_of_curl_and_poplib_imports_as_the_relay_recorded(
    recorded: Recorded, tmp_path: Path
) -> None:
    sessions = import_pcap(recorded.pcap, tmp_path, port=recorded.port)
    assert [s.reason for s in sessions] == [None, None, None]
    imported = by_client([read_capture(p) for p in iter_capture_paths([tmp_path])])
    reference = by_client(recorded.relay_captures)
    assert imported.keys() == reference.keys()
    for client, capture in imported.items():
        assert capture.complete
        assert capture.header.secrets == "masked"
        assert capture.header.options["mid_session"] is False
        assert session_text(capture) == session_text(reference[client])
        assert [(e.verb, e.args, e.status, e.first_line) for e in capture.exchanges()] == [
            (e.verb, e.args, e.status, e.first_line) for e in reference[client].exchanges()
        ]
        assert capture.stream("s2c") == reference[client].stream("s2c")
        assert capture.stream("c2s") == reference[client].stream("c2s")
    # The password was on the wire in the pcap; the imported captures hold it masked.
    for path in iter_capture_paths([tmp_path]):
        assert recorded.mailbox.password.encode() not in path.read_bytes()
    assert recorded.mailbox.password.encode() in recorded.pcap.read_bytes()


@pytest.mark.realpeer
def test_shuffled_and_duplicated_segments_reassemble_to_the_same_sessions(
    recorded: Recorded, tmp_path: Path
) -> None:
    packets = read_packets(recorded.pcap)
    rng = random.Random(1939)
    mixed = []
    for packet in packets:
        mixed.append(packet)
        if scapy_all.TCP in packet and len(packet[scapy_all.TCP].payload) and rng.random() < 0.3:
            mixed.append(packet.copy())  # a retransmission
    # Shuffle within windows of 12 packets (segments arrive out of order), and give the
    # file increasing timestamps in its new order, as a capture of that arrival would.
    for start in range(0, len(mixed), 12):
        window = mixed[start : start + 12]
        rng.shuffle(window)
        mixed[start : start + 12] = window
    times = sorted(float(p.time) for p in mixed)
    for packet, when in zip(mixed, times, strict=True):
        packet.time = when
    shuffled = tmp_path / "shuffled.pcapng"
    scapy_all.wrpcapng(str(shuffled), mixed)
    assert [p.time for p in mixed] != [p.time for p in packets]

    import_pcap(recorded.pcap, tmp_path / "plain", port=recorded.port)
    import_pcap(shuffled, tmp_path / "mixed", port=recorded.port)
    plain = by_client([read_capture(p) for p in iter_capture_paths([tmp_path / "plain"])])
    mixed_caps = by_client([read_capture(p) for p in iter_capture_paths([tmp_path / "mixed"])])
    assert plain.keys() == mixed_caps.keys()
    for client, capture in plain.items():
        assert session_text(mixed_caps[client]) == session_text(capture)
        assert mixed_caps[client].stream("s2c") == capture.stream("s2c")


@pytest.mark.realpeer
def test_capture_that_starts_mid_session_is_imported_and_marked(
    recorded: Recorded, tmp_path: Path
) -> None:
    packets = read_packets(recorded.pcap)
    poplib_client = max(
        by_client(recorded.relay_captures),
        key=lambda c: len(by_client(recorded.relay_captures)[c].exchanges()),
    )
    port = int(poplib_client.rsplit(":", 1)[1])
    TCP = scapy_all.TCP
    ours = [i for i, p in enumerate(packets) if TCP in p and port in (p[TCP].sport, p[TCP].dport)]
    # Drop the handshake, the greeting and the first commands of that session.
    with_data = [i for i in ours if len(packets[i][TCP].payload)]
    cut = with_data[4]
    kept = [p for i, p in enumerate(packets) if i not in ours or i >= cut]
    late = tmp_path / "late.pcap"
    scapy_all.wrpcap(str(late), kept)
    sessions = import_pcap(late, tmp_path / "out", port=recorded.port)
    marked = [s for s in sessions if s.mid_session]
    assert len(marked) == 1 and marked[0].path is not None
    capture = read_capture(marked[0].path)
    assert capture.header.options["mid_session"] is True
    assert any(getattr(r, "name", "") == "mid_session" for r in capture.records)
    retrieved = [e for e in capture.exchanges() if e.verb == "RETR"]
    assert len(retrieved) == len(recorded.mailbox.messages)
    text = session_text(capture)
    assert any("mid_session" in line for line in text)


def _synthetic(path: Path, conversation: list[tuple[str, bytes]], port: int = 110) -> None:
    """A pcap of one TCP connection (handshake, then the payloads in order, then FINs)."""
    IP, TCP = scapy_all.IP, scapy_all.TCP
    client, server = ("192.0.2.10", 40000), ("192.0.2.20", port)
    seq = {"c": 1000, "s": 5000}
    packets = [
        IP(src=client[0], dst=server[0]) / TCP(sport=client[1], dport=port, flags="S", seq=999),
        IP(src=server[0], dst=client[0])
        / TCP(sport=port, dport=client[1], flags="SA", seq=4999, ack=1000),
    ]
    for who, data in conversation:
        src, dst = (client, server) if who == "c" else (server, client)
        other = "s" if who == "c" else "c"
        packets.append(
            IP(src=src[0], dst=dst[0])
            / TCP(sport=src[1], dport=dst[1], flags="PA", seq=seq[who], ack=seq[other])
            / data
        )
        seq[who] += len(data)
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000 + i * 0.01
    scapy_all.wrpcap(str(path), packets)


def test_tls_connections_are_listed_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _synthetic(
        tmp_path / "pop3s.pcap", [("c", b"\x16\x03\x01\x00\x05hello"), ("s", b"\x16\x03\x03x")]
    )
    _synthetic(
        tmp_path / "stls.pcap",
        [
            ("s", b"+OK ready\r\n"),
            ("c", b"STLS\r\n"),
            ("s", b"+OK Begin TLS\r\n"),
            ("c", b"\x16\x03\x01\x00\x05hello"),
        ],
    )
    for name, why in (("pop3s", "TLS from the first byte"), ("stls", "after STLS")):
        assert main(["import", str(tmp_path / f"{name}.pcap"), "-o", str(tmp_path / name)]) == 1
        out = capsys.readouterr().out
        assert out.startswith("skipped  192.0.2.10:40000 -> 192.0.2.20:110: ")
        assert why in out
        assert iter_capture_paths([tmp_path / name]) == []


def test_synthetic_session_on_default_port_keeps_packet_times(tmp_path: Path) -> None:
    _synthetic(
        tmp_path / "plain.pcap",
        [
            ("s", b"+OK ready\r\n"),
            ("c", b"USER a\r\nPASS hunter2\r\n"),
            ("s", b"+OK\r\n"),
            ("s", b"+OK in\r\n"),
            ("c", b"RETR 1\r\n"),
            ("s", b"+OK\r\n..x\r\n.\r\n"),
        ],
    )
    (session,) = import_pcap(tmp_path / "plain.pcap", tmp_path / "out")
    assert session.path is not None and session.exchanges == 3
    capture = read_capture(session.path)
    assert capture.header.started_unix == pytest.approx(1_700_000_000)
    assert capture.header.client == "192.0.2.10:40000"
    assert capture.stream("c2s") == b"USER a\r\nPASS ********\r\nRETR 1\r\n"
    retr = capture.exchanges()[-1]
    assert retr.sent_at == pytest.approx(0.06)
    assert retr.at == pytest.approx(0.07)


@pytest.mark.parametrize("kind", ["junk", "empty", "truncated", "truncated-pcapng"])
def test_bad_pcap_is_one_line_error(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _synthetic(tmp_path / "good.pcap", [("s", b"+OK ready\r\n")])
    good = (tmp_path / "good.pcap").read_bytes()
    bad = tmp_path / "bad.pcap"
    if kind == "junk":
        bad.write_bytes(b"From: not a pcap\r\n" * 20)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(good[:-5])
    else:
        packets = read_packets(tmp_path / "good.pcap")
        scapy_all.wrpcapng(str(tmp_path / "good.pcapng"), packets)
        bad.write_bytes((tmp_path / "good.pcapng").read_bytes()[:-9])
    assert main(["import", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert ("truncated" if kind.startswith("truncated") else "not a pcap") in err
    with pytest.raises(PcapImportError):
        import_pcap(bad, tmp_path / "out")


def test_imported_sasl_is_masked_and_commands_pipelined_behind_auth_stay_clear(
    tmp_path: Path,
) -> None:
    """The import masks as the relay does: the SASL answer is a secret, and commands
    pipelined behind AUTH are written clear once the server's answer shows no continuation."""
    _synthetic(
        tmp_path / "auth.pcap",
        [
            ("s", b"+OK ready\r\n"),
            ("c", b"AUTH PLAIN AGFsaWNlAGh1bnRlcjI=\r\nSTAT\r\nQUIT\r\n"),
            ("s", b"+OK Logged in.\r\n+OK 1 10\r\n+OK bye\r\n"),
        ],
    )
    (session,) = import_pcap(tmp_path / "auth.pcap", tmp_path / "out")
    assert session.path is not None
    capture = read_capture(session.path)
    assert capture.stream("c2s") == b"AUTH PLAIN ********\r\nSTAT\r\nQUIT\r\n"
    assert [ex.verb for ex in capture.exchanges()] == ["AUTH", "STAT", "QUIT"]
    assert b"hunter2" not in session.path.read_bytes()
    assert b"AGFsaWNlAGh1bnRlcjI" not in session.path.read_bytes()


def _exchanges_of(pcap: Path, out: Path) -> list[tuple[str, str | None]]:
    (session,) = import_pcap(pcap, out)
    assert session.path is not None
    return [(e.verb + " " + e.args, e.first_line) for e in read_capture(session.path).exchanges()]


_NOOPS = [("s", b"+OK ready\r\n")] + [
    item for n in range(1, 7) for item in (("c", b"NOOP %d\r\n" % n), ("s", b"+OK %d\r\n" % n))
]


@settings(max_examples=20, deadline=None)
@given(lost=st.sets(st.integers(1, 6), max_size=5))
def test_commands_lost_by_the_capture_leave_the_others_paired(lost: set[int]) -> None:
    # tcpdump drops packets under load: the bytes become a gap, and every answer still
    # follows its own command, whatever is missing before it.
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _synthetic(directory / "all.pcap", _NOOPS)
        packets = read_packets(directory / "all.pcap")
        # The client resets at the end (a RST carries no acknowledgement).
        last = packets[-2]
        reset = last.copy()
        reset["TCP"].remove_payload()
        reset["TCP"].flags, reset["TCP"].seq = "R", last["TCP"].seq + len(last["TCP"].payload)
        reset.time = packets[-1].time + 0.01
        packets.append(reset)
        # 0 SYN, 1 SYN-ACK, 2 greeting, then NOOP n at 1 + 2n and its answer at 2 + 2n.
        dropped = {1 + 2 * n for n in lost}
        kept = [p for i, p in enumerate(packets) if i not in dropped]
        scapy_all.wrpcap(str(directory / "lossy.pcap"), kept)
        pairs = _exchanges_of(directory / "lossy.pcap", directory / "out")
        expected = [(f"NOOP {n}", f"+OK {n}") for n in range(1, 7) if n not in lost]
        assert [p for p in pairs if p[0].startswith("NOOP")] == expected
        # A capture written in order imports in that order: the reset comes last.
        (capture,) = [read_capture(p) for p in iter_capture_paths([directory / "out"])]
        flow = [
            (r.dir, r.data) if isinstance(r, DataRecord) else (r.name,)
            for r in capture.records
            if isinstance(r, DataRecord) or getattr(r, "name", "") == "reset"
        ]
        sent = [
            ("c2s" if p["TCP"].dport == 110 else "s2c", bytes(p["TCP"].payload))
            for p in kept
            if len(p["TCP"].payload)
        ]
        assert flow == [*sent, ("reset",)]


def test_out_of_window_reset_of_a_mid_session_capture_is_no_gap(tmp_path: Path) -> None:
    IP, TCP = scapy_all.IP, scapy_all.TCP
    client, server = ("192.0.2.10", 40000), ("192.0.2.20", 110)

    def segment(who: str, **fields: object) -> object:
        src, dst = (client, server) if who == "c" else (server, client)
        return IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], **fields)

    packets = [
        segment("s", flags="PA", seq=899_990, ack=700_000) / b"+OK hi\r\n",
        segment("c", flags="PA", seq=700_000, ack=899_998) / b"STAT\r\n",
        segment("s", flags="PA", seq=899_998, ack=700_006) / b"+OK 1 2\r\n",
        segment("c", flags="R", seq=0),  # a reset from a stack that sends seq 0
    ]
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000 + i * 0.1
    scapy_all.wrpcap(str(tmp_path / "late.pcap"), packets)
    assert _exchanges_of(tmp_path / "late.pcap", tmp_path / "out") == [("STAT ", "+OK 1 2")]
    (capture,) = [read_capture(p) for p in iter_capture_paths([tmp_path / "out"])]
    assert not [r for r in capture.records if getattr(r, "name", "") == "gap"]


@settings(max_examples=12, deadline=None)
@given(start=st.integers(1, 6))
def test_capture_starting_after_the_greeting_pairs_every_answer(start: int) -> None:
    # tcpdump started while the session was on: the first packet is a command, so the
    # first server line answers it (it is no greeting), in the import and in every reader.
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _synthetic(directory / "all.pcap", [*_NOOPS, ("c", b"QUIT\r\n"), ("s", b"+OK bye\r\n")])
        packets = read_packets(directory / "all.pcap")
        # 0 SYN, 1 SYN-ACK, 2 greeting, then NOOP n at 1 + 2n and its answer at 2 + 2n.
        scapy_all.wrpcap(str(directory / "late.pcap"), packets[1 + 2 * start :])
        pairs = _exchanges_of(directory / "late.pcap", directory / "out")
        expected = [(f"NOOP {n}", f"+OK {n}") for n in range(start, 7)]
        assert pairs == [*expected, ("QUIT ", "+OK bye")]
        (capture,) = [read_capture(p) for p in iter_capture_paths([directory / "out"])]
        text = session_text(capture)
        assert not [line for line in text if "(stray)" in line or "(no response)" in line]


_SASL_SECRET = b"AGFsaWNlAGh1bnRlcjI="  # PLAIN: "\0alice\0hunter2"


@pytest.mark.parametrize(
    "conversation",
    [
        # The capture starts with the client's answer to a challenge it never shows...
        [("c", _SASL_SECRET + b"\r\n"), ("s", b"+OK Logged in.\r\n"), ("c", b"STAT\r\n")],
        # ...or with the challenge, taken for a greeting.
        [("s", b"+ \r\n"), ("c", _SASL_SECRET + b"\r\n"), ("s", b"+OK Logged in.\r\n")],
        # ...or in the middle of the answer's line.
        [("c", b"bGljZQBodW50ZXIy\r\n"), ("s", b"+OK\r\n"), ("c", b"NOOP\r\n")],
    ],
    ids=["answer-first", "challenge-first", "mid-line"],
)
def test_capture_starting_inside_sasl_masks_what_it_cannot_place(
    tmp_path: Path, conversation: list[tuple[str, bytes]]
) -> None:
    # Without the AUTH command the masker cannot know a line is SASL data: until the
    # server's first status line, a client line that is no POP3 command is masked.
    _synthetic(tmp_path / "all.pcap", conversation)
    packets = read_packets(tmp_path / "all.pcap")
    scapy_all.wrpcap(str(tmp_path / "late.pcap"), packets[2:])  # no handshake
    assert main(["import", str(tmp_path / "late.pcap"), "-o", str(tmp_path / "out")]) == 0
    (path,) = iter_capture_paths([tmp_path / "out"])
    raw = path.read_bytes()
    assert b"AGFsaWNl" not in raw and b"bGljZQBo" not in raw
    capture = read_capture(path)
    commands = capture.stream("c2s").split(b"\r\n")
    assert b"********" in commands
    assert {b"STAT", b"NOOP"} & set(commands) or conversation[-1][0] == "s"


@settings(max_examples=25, deadline=None)
@given(secret=st.binary(min_size=8, max_size=40), cut=st.integers(0, 8), split=st.integers(1, 30))
def test_no_sasl_secret_survives_an_import_wherever_the_capture_starts(
    secret: bytes, cut: int, split: int
) -> None:
    import base64

    encoded = base64.b64encode(secret)
    answer = encoded + b"\r\n"
    conversation = [
        ("s", b"+OK ready\r\n"),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", answer[:split]),
        ("c", answer[split:]),
        ("s", b"+OK in\r\n"),
        ("c", b"STAT\r\n"),
        ("s", b"+OK 1 2\r\n"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _synthetic(directory / "all.pcap", [(w, d) for w, d in conversation if d])
        packets = read_packets(directory / "all.pcap")
        scapy_all.wrpcap(str(directory / "late.pcap"), packets[cut:])
        import_pcap(directory / "late.pcap", directory / "out")
        for path in iter_capture_paths([directory / "out"]):
            assert encoded not in path.read_bytes()
            assert encoded[: len(encoded) // 2 + 1] not in read_capture(path).stream("c2s")


def test_a_session_seen_from_its_middle_shows_exactly_the_command_table_s_verbs() -> None:
    """The guard for a capture that starts mid-session keeps no verb list of its own: a line
    is shown when its first word is a keyword of the core's table (XTND and LAST included)."""
    from pop3tap.pcap_import import _UntilInSync
    from pop3tap.protocol import known_verbs

    for verb in sorted(known_verbs()):
        line = f"{verb.lower()} 1\r\n".encode()
        assert _UntilInSync._decide(line) == line
    assert _UntilInSync._decide(b"hunter2\r\n") == b"********\r\n"


def _imported_c2s(directory: Path, conversation: list[tuple[str, bytes]], *, cut: int) -> bytes:
    """The client stream of the capture imported from ``conversation``, the first ``cut``
    packets (the handshake is two) left out of the pcap."""
    _synthetic(directory / "all.pcap", conversation)
    scapy_all.wrpcap(str(directory / "cut.pcap"), read_packets(directory / "all.pcap")[cut:])
    (session,) = import_pcap(directory / "cut.pcap", directory / "out")
    assert session.path is not None
    return read_capture(session.path).stream("c2s")


def _auth_after_a_line_the_guard_masks(first_line: bytes, sasl: bytes) -> list[tuple[str, bytes]]:
    return [
        ("c", first_line),
        ("s", b"+OK Logged in.\r\n"),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", sasl + b"\r\n"),
        ("s", b"+OK\r\n"),
        ("c", b"NOOP\r\n"),
        ("s", b"+OK\r\n"),
        ("c", b"LIST 1\r\n"),
        ("s", b"+OK 1 2\r\n"),
    ]


@pytest.mark.parametrize(
    "first_line",
    [b"ab\r\n", b"abcdefgh\r\n", _SASL_SECRET + b"\r\n", b"x" * 300 + b"\r\n"],
    ids=["shorter-than-the-mask", "as-long", "longer", "much-longer"],
)
def test_a_line_masked_before_the_sync_moves_no_verdict_after_a_later_auth(
    tmp_path: Path, first_line: bytes
) -> None:
    """The mid-session guard writes ``********`` for a line it cannot place; the masker and
    the pairing still see the same bytes, so each line after a later AUTH gets its own
    verdict: the SASL line masked (even one that reads like a command), the commands
    behind it clear, none lost."""
    conversation = _auth_after_a_line_the_guard_masks(first_line, b"STAT")
    c2s = _imported_c2s(tmp_path, conversation, cut=2)
    assert c2s == b"********\r\nAUTH PLAIN\r\n********\r\nNOOP\r\nLIST 1\r\n"


@settings(max_examples=25, deadline=None)
@given(
    junk=st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    sasl=st.sampled_from([b"STAT", b"NOOP", b"c2VjcmV0", _SASL_SECRET]),
)
def test_an_import_from_the_middle_writes_every_line_after_auth_as_the_relay_would(
    junk: bytes, sasl: bytes
) -> None:
    # A first line of any length that is no command (the guard masks it), then an AUTH.
    conversation = _auth_after_a_line_the_guard_masks(b"x" + junk + b"\r\n", sasl)
    with tempfile.TemporaryDirectory() as tmp:
        c2s = _imported_c2s(Path(tmp), conversation, cut=2)
    assert c2s == b"********\r\nAUTH PLAIN\r\n********\r\nNOOP\r\nLIST 1\r\n"


@pytest.mark.parametrize("cut", [0, 2], ids=["whole", "mid-session"])
def test_client_lines_the_server_never_answered_are_written_masked(
    tmp_path: Path, cut: int
) -> None:
    # What the relay writes for the same bytes (tests/test_relay_recorder.py): the lines
    # without a verdict when the session ends are masked, never dropped.
    conversation = [
        ("s", b"+OK ready\r\n"),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", b"c2VjcmV0\r\nSTAT\r\n"),
    ]
    assert _imported_c2s(tmp_path, conversation, cut=cut) == (
        b"AUTH PLAIN\r\n********\r\n********\r\n"
    )
