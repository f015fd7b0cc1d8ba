"""``pop3tap record``: relay clients to a real server and record every session."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pop3tap.cli._common import (
    EXIT_FAILURE,
    CliError,
    Subparsers,
    add_listen_option,
    add_logging_options,
    add_workers_option,
    check_input_file,
    check_workers,
    check_writable_directory,
    epilog,
    is_loopback,
    parse_endpoint,
    setup_logging,
    warn_if_shared_directory,
)
from pop3tap.cli._faults import add_fault_options, fault_specs
from pop3tap.cli._serve import serve_server
from pop3tap.cli._tls_options import add_certificate_options
from pop3tap.cli.config import from_files

if TYPE_CHECKING:
    from pop3tap.relay import RelayConfig
    from pop3tap.tls import TlsConfig


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "record",
        help="relay clients to a real server and record every session",
        description="Listen for POP3 clients, relay each to UPSTREAM byte for byte, log every "
        "command/response pair and write one capture file per session.",
        epilog=epilog(
            "  pop3tap record -u pop.example.com:110                 listen on 127.0.0.1:1110\n"
            "  pop3tap record -u pop.example.com:110 -l 2110 -w caps/\n"
            "  pop3tap record -u pop.example.com:995 --upstream-tls --listen-tls -l 1995\n"
            "  pop3tap record -u 10.0.0.5:110 --upstream-ca test-ca.pem -q --log-file relay.log"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-u",
        "--upstream",
        metavar="HOST:PORT",
        help="the real server (required, here or in the config file)",
    )
    add_listen_option(parser)
    parser.add_argument(
        "-w",
        "--captures",
        default=None,
        metavar="DIR",
        help="directory for capture files (default: captures/)",
    )
    parser.add_argument(
        "--no-captures", action="store_true", help="log only; write no capture files"
    )
    parser.add_argument(
        "--keep-secrets",
        action="store_true",
        help="keep PASS, APOP digests and SASL data in captures (logs stay masked)",
    )
    _add_timeout_options(parser)
    add_fault_options(parser, relay=True)
    add_workers_option(parser)
    _add_tls_options(parser)
    add_logging_options(parser)
    parser.set_defaults(handler=_cmd_record)


def _add_timeout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM/SIGHUP, let open sessions finish for this long (default 10); "
        "a second signal closes them at once",
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=10.0, metavar="SECONDS", help="default 10"
    )
    parser.add_argument(
        "--greeting-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up on an upstream that sends no greeting line in this time "
        "(default 30; 0: wait forever)",
    )
    parser.add_argument(
        "--close-linger",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after passing one side's close on to a TLS peer (as close_notify), wait this "
        "long for that peer to end its side before closing it (default 5)",
    )


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "TLS",
        "STLS is always intercepted (RFC 2595 §4). Certificates shown to clients come from "
        "pop3tap's CA (created on first use; see `pop3tap ca`) unless --cert/--key are given.",
    )
    group.add_argument(
        "--upstream-tls",
        action="store_true",
        help="implicit TLS to the server (POP3S, usually port 995)",
    )
    group.add_argument(
        "--upstream-ca",
        type=Path,
        metavar="FILE",
        help="trust only this CA (PEM) for the server, instead of the system store",
    )
    group.add_argument(
        "--insecure-upstream",
        action="store_true",
        help="do not verify the server's certificate (dangerous; logged as a warning)",
    )
    group.add_argument(
        "--listen-tls", action="store_true", help="implicit TLS for clients on the listening port"
    )
    add_certificate_options(group)
    group.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append TLS secrets here for Wireshark (default: $SSLKEYLOGFILE if set)",
    )
    group.add_argument(
        "--tls-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="limit for each TLS handshake (default 15)",
    )


def _tls_config(args: argparse.Namespace) -> TlsConfig:
    from pop3tap.tls import TlsConfig

    if (args.cert is None) != (args.key is None):
        raise CliError("--cert and --key go together")
    check_input_file(args.cert, "--cert")
    check_input_file(args.key, "--key")
    check_input_file(args.upstream_ca, "--upstream-ca")
    if args.insecure_upstream and args.upstream_ca is not None:
        raise CliError("--insecure-upstream and --upstream-ca contradict each other")
    if math.isnan(args.tls_timeout) or args.tls_timeout <= 0:
        raise CliError("--tls-timeout must be positive")
    keylog = args.keylog
    if keylog is None and os.environ.get("SSLKEYLOGFILE"):
        keylog = Path(os.environ["SSLKEYLOGFILE"])
    if keylog is not None:
        # TLS secrets decrypt everything, PASS included: the file is private (0600), ours,
        # and in a directory no one else can swap it in (OpenSSL reopens it by name).
        from pop3tap._private import UnsafePathError, check_parent_not_shared, open_private_append

        try:
            check_parent_not_shared(keylog, "--keylog")
            os.close(open_private_append(keylog, "--keylog"))
        except UnsafePathError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"--keylog {keylog}: cannot write it: {exc.strerror}") from None
    return TlsConfig(
        upstream_tls=args.upstream_tls,
        listen_tls=args.listen_tls,
        upstream_ca=args.upstream_ca,
        insecure_upstream=args.insecure_upstream,
        ca_dir=args.ca_dir,
        cert=args.cert,
        key=args.key,
        keylog=keylog,
        handshake_timeout=args.tls_timeout,
    )


def _cmd_record(args: argparse.Namespace) -> int:
    from pop3tap.relay import RelayServer
    from pop3tap.tls import TlsSetupError

    _settle_captures_options(args)
    config = _relay_config(args)
    setup_logging(args)
    import structlog

    log = structlog.get_logger("pop3tap")
    if config.captures is not None:
        warn_if_shared_directory(config.captures, log)
    if not is_loopback(config.listen.host):
        log.warning(
            "relay.public_listen",
            listen=config.listen.host,
            note="listening beyond loopback: anyone who can reach it can use your upstream",
        )
    server = RelayServer(config)
    try:
        server.prepare_tls()  # setup errors show once, before any worker starts
    except TlsSetupError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    captures = config.captures
    return serve_server(
        server,
        workers=args.workers,
        log=log,
        listening=lambda: {
            "upstream": str(config.upstream),
            "captures": str(captures) if captures else None,
        },
        stopped=lambda: {"sessions": server.total_sessions},
    )


def _settle_captures_options(args: argparse.Namespace) -> None:
    """``--captures`` and ``--no-captures``: the command line overrides a config file,
    also when it contradicts the file; both on the command line is an error."""
    if not args.upstream:
        raise CliError(
            "record: the following arguments are required: -u/--upstream "
            "(or upstream in the [record] table of pop3tap.toml)"
        )
    if args.no_captures and args.captures is not None:
        if from_files(args, "captures") and not from_files(args, "no_captures"):
            args.captures = None
        elif from_files(args, "no_captures") and not from_files(args, "captures"):
            args.no_captures = False
        else:
            raise CliError("--captures and --no-captures contradict each other")


def _relay_config(args: argparse.Namespace) -> RelayConfig:
    """The relay's configuration from checked command-line arguments (raises CliError)."""
    from pop3tap.relay import Endpoint, RelayConfig

    upstream_host, upstream_port = parse_endpoint(args.upstream)
    if upstream_port == 0:
        raise CliError(f"malformed address {args.upstream!r}: the upstream port cannot be 0")
    listen_host, listen_port = parse_endpoint(args.listen, default_host="127.0.0.1")
    for name in ("grace", "connect_timeout", "greeting_timeout", "close_linger"):
        value = getattr(args, name)
        if math.isnan(value) or value < 0:
            raise CliError(f"--{name.replace('_', '-')} must be a number of seconds, not negative")
    check_workers(args.workers)
    tls = _tls_config(args)
    captures = None if args.no_captures else Path(args.captures or "captures")
    if captures is not None:
        check_writable_directory(captures)
    return RelayConfig(
        upstream=Endpoint(upstream_host, upstream_port),
        listen=Endpoint(listen_host, listen_port),
        captures=captures,
        keep_secrets=args.keep_secrets,
        grace=args.grace,
        connect_timeout=args.connect_timeout,
        greeting_timeout=args.greeting_timeout or None,
        close_linger=args.close_linger,
        tls=tls,
        faults=fault_specs(args, relay=True),
        fault_rewrite=args.fault_rewrite,
    )
