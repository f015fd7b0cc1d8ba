"""``pop3tap import``: plaintext POP3 sessions from a pcap/pcapng file into captures."""

from __future__ import annotations

import argparse
import logging

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_FAILURE, EXIT_OK, CliError, Subparsers, epilog


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "import",
        help="turn the POP3 sessions of a tcpdump/Wireshark file into captures",
        description=(
            "Reassemble every plaintext POP3 TCP connection of a pcap or pcapng file into a "
            ".p3cap capture (packet timestamps kept, secrets masked unless --keep-secrets), "
            "so show, replay and export work on it. Connections that use TLS are listed and "
            "skipped; one that started before the capture is imported and marked."
        ),
        epilog=epilog(
            "  pop3tap import traffic.pcap -o captures/\n"
            "  pop3tap import server.pcapng -o captures/ --port 2110"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pcap", metavar="FILE.pcap", help="a pcap or pcapng file")
    parser.add_argument(
        "-o", "--output", metavar="DIR", required=True, help="directory for the captures"
    )
    parser.add_argument(
        "--port", type=_port, default=110, help="the POP3 server's TCP port (default 110)"
    )
    parser.add_argument(
        "--keep-secrets",
        action="store_true",
        help="keep PASS, APOP and SASL data in the captures (masked by default)",
    )
    parser.set_defaults(handler=_cmd_import)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number from 1 to 65535")
    return int(text)


def _cmd_import(args: argparse.Namespace) -> int:
    from pop3tap.pcap_import import PcapImportError, import_pcap

    # Scapy logs its own warnings (for instance about link types it does not know);
    # this command reports what matters itself, one line each.
    logging.getLogger("scapy").setLevel(logging.ERROR)
    try:
        sessions = import_pcap(
            args.pcap, args.output, port=args.port, keep_secrets=args.keep_secrets
        )
    except PcapImportError as exc:
        raise CliError(str(exc)) from None
    imported = 0
    for session in sessions:
        if session.path is None:
            print(printable(f"skipped  {session.connection}: {session.reason}"))
            continue
        imported += 1
        notes = []
        if session.mid_session:
            notes.append("started before the packet capture")
        if session.gaps:
            notes.append(f"{session.gaps} gap(s) of uncaptured bytes")
        note = f" ({'; '.join(notes)})" if notes else ""
        print(
            printable(
                f"imported {session.connection}: {session.exchanges} command(s) -> "
                f"{session.path}{note}"
            )
        )
    if not sessions:
        raise CliError(f"no TCP connections to port {args.port} in {args.pcap}", code=EXIT_FAILURE)
    return EXIT_OK if imported else EXIT_FAILURE
