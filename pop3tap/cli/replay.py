"""``pop3tap replay``: serve recorded captures as a fake POP3 server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pop3tap._text import printable
from pop3tap.cli._common import (
    EXIT_FAILURE,
    CliError,
    Subparsers,
    add_listen_option,
    add_logging_options,
    add_workers_option,
    check_input_file,
    check_workers,
    epilog,
    is_loopback,
    parse_endpoint,
    setup_logging,
)
from pop3tap.cli._faults import add_fault_options, fault_specs
from pop3tap.cli._tls_options import add_certificate_options

if TYPE_CHECKING:
    from pop3tap.replay import RecordedSession, ReplayConfig, ReplayServer


def _timing(text: str) -> str:
    from pop3tap.replay import parse_timing

    try:
        parse_timing(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _user_password(text: str) -> tuple[str, str]:
    user, sep, password = text.partition("=")
    if not sep or not user:
        raise argparse.ArgumentTypeError(f"expected USER=PASSWORD, not {text.split('=')[0]!r}")
    return user, password


def _check_model_options(args: argparse.Namespace) -> None:
    """Options of byte replay that mean nothing for a mailbox model are refused."""
    if args.workers > 1:
        raise CliError(
            f"--model cannot run with --workers {args.workers}: each worker would keep its own "
            "mailbox, locks and deletions"
        )
    for given, name in (
        (args.by_user, "--by-user"),
        (args.match != "default", f"--match {args.match}"),
        (args.sessions != "cycle", f"--sessions {args.sessions}"),
    ):
        if given:
            raise CliError(f"{name} is for byte replay; --model serves a mailbox to any client")


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be a number of seconds, not negative")
    return value


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "replay",
        help="serve recorded captures as a fake POP3 server",
        description="Answer POP3 clients with the exact bytes a real server sent in recorded "
        "sessions (see docs/replay.md).",
        epilog=epilog(
            "  pop3tap replay captures/user-pass.p3cap               on 127.0.0.1:1110\n"
            "  pop3tap replay captures/ -l 2110 --by-user             one session per user\n"
            "  pop3tap replay pop3s.p3cap -l 1995                     POP3S, as recorded\n"
            "  pop3tap replay session.p3cap --timing recorded --match strict"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "captures",
        nargs="*",
        metavar="CAPTURE|DIR",
        help="capture files or directories (optional with --model --messages)",
    )
    add_listen_option(parser)
    _add_matching_options(parser)
    _add_model_options(parser)
    _add_tls_options(parser)
    add_fault_options(parser, relay=False)
    add_workers_option(parser)
    add_logging_options(parser)
    parser.set_defaults(handler=_cmd_replay)


def _add_matching_options(parser: argparse.ArgumentParser) -> None:
    """Which session a connection plays, how commands match, timing and time limits."""
    parser.add_argument(
        "--sessions",
        choices=("cycle", "once"),
        default="cycle",
        help="cycle: each connection takes the next recorded session, wrapping around "
        "(default); once: each session is served at most once",
    )
    parser.add_argument(
        "--by-user",
        action="store_true",
        help="serve the session whose USER/APOP/AUTH user matches the client's",
    )
    parser.add_argument(
        "--match",
        choices=("default", "strict", "any"),
        default="default",
        help="default: next unplayed exchange with equal verb and arguments; strict: the "
        "next recorded command exactly; any: reuse the last match once all are played",
    )
    parser.add_argument(
        "--timing",
        type=_timing,
        default="fast",
        metavar="fast|recorded|FACTOR",
        help="fast: no delays (default); recorded: the recorded latency and pacing; "
        "FACTOR: recorded timing sped up (2 = twice as fast)",
    )
    parser.add_argument(
        "--grace",
        type=_grace,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM/SIGHUP, let open connections finish for this long "
        "(default 10); a second signal closes them at once",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="close connections idle this long (default 600)",
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``: a mailbox built from the captures (docs/model.md)."""
    model = parser.add_argument_group(
        "mailbox model",
        "Serve a consistent POP3 mailbox built from the captures for any command order, with "
        "the recorded bytes where the same command was recorded in the same state (see "
        "docs/model.md).",
    )
    model.add_argument(
        "--model", action="store_true", help="serve a mailbox model instead of byte replay"
    )
    model.add_argument(
        "--messages",
        type=Path,
        metavar="DIR|MBOX",
        help="serve these messages (a directory of .eml files, a Maildir or an mbox file); "
        "captures, if given, lend the greeting, CAPA and wording",
    )
    model.add_argument(
        "--model-missing",
        choices=("err", "synth"),
        default="err",
        help="a message whose body was never retrieved: err (one -ERR naming the gap, "
        "default) or synth (a generated message of the recorded size, marked as such)",
    )
    model.add_argument(
        "--model-persist",
        action="store_true",
        help="deletions made by one session's QUIT are seen by later sessions",
    )
    model.add_argument(
        "--model-shared",
        action="store_true",
        help="allow several sessions on one mailbox at once (default: -ERR [IN-USE])",
    )
    model.add_argument(
        "--model-password",
        action="append",
        default=[],
        type=_user_password,
        metavar="USER=PASSWORD",
        help="check USER's logins against PASSWORD (repeatable; default: the password kept in "
        "the capture, or any password when it was masked)",
    )


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    """Implicit TLS, STLS certificates and the handshake limit."""
    tls = parser.add_argument_group(
        "TLS",
        "STLS captures (RFC 2595 §4) upgrade where they did when recorded; certificates come "
        "from pop3tap's CA (created if missing; see `pop3tap ca`) unless --cert/--key are given.",
    )
    tls.add_argument(
        "--listen-tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="implicit TLS from the first byte (RFC 8314); default: as the captures were "
        "recorded (POP3S captures are served over TLS)",
    )
    add_certificate_options(tls)
    tls.add_argument(
        "--tls-timeout",
        type=_seconds,
        default=15.0,
        metavar="SECONDS",
        help="limit for each TLS handshake with a client (default 15)",
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from pop3tap.replay import ReplayError, ReplayServer
    from pop3tap.tls import TlsSetupError

    host, port = parse_endpoint(args.listen, default_host="127.0.0.1")
    _check_args(args)
    config, sessions = _load(args, host, port)
    setup_logging(args)
    import structlog

    log = structlog.get_logger("pop3tap")
    if not is_loopback(config.listen.host):
        log.warning("replay.public_listen", listen=config.listen.host)
    try:
        server = ReplayServer(config, sessions)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    except TlsSetupError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    return _serve(args, server, len(sessions), log)


def _check_args(args: argparse.Namespace) -> None:
    """Option combinations that cannot work, refused before anything is loaded."""
    if not args.captures and args.messages is None:
        raise CliError("replay needs capture files or directories (or --model --messages DIR)")
    if args.model:
        _check_model_options(args)
    check_workers(args.workers)
    if (args.cert is None) != (args.key is None):
        raise CliError("--cert and --key go together")
    check_input_file(args.cert, "--cert")
    check_input_file(args.key, "--key")
    if args.workers > 1 and args.sessions != "cycle":
        raise CliError(
            f"--workers {args.workers} needs --sessions cycle: each worker keeps its own "
            f"record of played sessions, so --sessions {args.sessions} would replay them "
            "more than once"
        )


def _load(
    args: argparse.Namespace, host: str, port: int
) -> tuple[ReplayConfig, list[RecordedSession]]:
    """The configuration and the recorded sessions; warnings and notes go to stderr."""
    from pop3tap.capture import CaptureError
    from pop3tap.replay import ReplayConfig, ReplayError, load_sessions, resolve_tls
    from pop3tap.server import Endpoint

    try:
        config = ReplayConfig(
            captures=tuple(args.captures),
            listen=Endpoint(host, port),
            sessions=args.sessions,
            by_user=args.by_user,
            match=args.match,
            timing=args.timing,
            idle_timeout=args.idle_timeout,
            listen_tls=args.listen_tls,
            cert=args.cert,
            key=args.key,
            ca_dir=args.ca_dir,
            tls_timeout=args.tls_timeout,
            model=args.model,
            model_missing=args.model_missing,
            model_persist=args.model_persist,
            model_shared=args.model_shared,
            messages=args.messages,
            passwords=tuple(args.model_password),
            faults=fault_specs(args, relay=False),
            grace=args.grace,
        )
        sessions, _warnings = (
            load_sessions(
                config.captures,
                on_warning=lambda text: print(
                    printable(f"pop3tap: warning: {text}"), file=sys.stderr
                ),
            )
            if config.captures
            else ([], [])
        )
        config, notes = resolve_tls(config, sessions)
    except (CaptureError, ReplayError, ValueError) as exc:
        raise CliError(str(exc)) from None
    for note in notes:
        print(printable(f"pop3tap: note: {note}"), file=sys.stderr)
    return config, sessions


def _serve(args: argparse.Namespace, server: ReplayServer, sessions: int, log: Any) -> int:
    """Serve until stopped (in ``--workers`` processes); the exit code."""
    from pop3tap.cli._serve import serve_server

    config = server.config
    return serve_server(
        server,
        workers=args.workers,
        log=log,
        listening=lambda: {
            "sessions": sessions,
            "mode": "model" if config.model else "bytes",
            "match": config.match,
            "timing": str(config.timing),
            "tls": "implicit" if config.listen_tls else ("stls" if server.tls else None),
            "ca_cert": None if server.ca_file is None else str(server.ca_file),
        },
        stopped=lambda: {
            "connections": server.total_sessions,
            "unplayed": len(server.unplayed),
            "unmatched": server.accounting.unmatched_total,
        },
    )
