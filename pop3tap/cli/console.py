"""``pop3tap console``: a manual POP3 session (telnet style) over TLS, safe and recorded."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pop3tap.cli._common import (
    CliError,
    Subparsers,
    check_writable_directory,
    epilog,
    parse_endpoint,
)

if TYPE_CHECKING:
    from pop3tap.console import SecretSource

#: Largest script read (a script is a few commands; this bounds a hostile stdin).
MAX_SCRIPT_BYTES = 1024 * 1024


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "console",
        help="a manual POP3 session (like telnet) over TLS, safe and recorded",
        description="Talk POP3 to a server by hand: commands are sent as typed, answers "
        "shown as sent (bodies dot-unstuffed and summarised). DELE only marks; QUIT with "
        "marks asks first; Ctrl-C and Ctrl-D leave without QUIT, so nothing is deleted. "
        "Every session is written as a capture with secrets masked. With --script FILE, "
        "or commands on stdin when it is not a terminal, runs them in order.",
        epilog=epilog(
            "  pop3tap console pop.example.com --tls --user alice        POP3S on 995\n"
            "  pop3tap console pop.example.com --starttls --user alice   STLS on 110\n"
            "  pop3tap console mail.test --tls --script fetch.txt --netrc"
        )
        + "\n  1  also: stdout closed"
        + "\n  3  a scripted command failed (-ERR, or refused)\n  130  interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "server", metavar="HOST[:PORT]", help="the POP3 server (port 110, or 995 with --tls)"
    )
    _add_connection_options(parser)
    _add_script_options(parser)
    parser.set_defaults(handler=_cmd_console)


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    """TLS, whom to trust, the login, where the capture goes, how long to wait."""
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the start (POP3S)")
    tls.add_argument("--starttls", action="store_true", help="upgrade with STLS after the greeting")
    parser.add_argument(
        "--upstream-ca",
        type=Path,
        metavar="FILE",
        help="trust only this CA (PEM) for the server, instead of the system store",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (dangerous)",
    )
    parser.add_argument(
        "--user", metavar="NAME", help="log in as NAME on connect (USER, then the password)"
    )
    parser.add_argument(
        "--netrc",
        nargs="?",
        const=Path("~/.netrc"),
        type=Path,
        metavar="FILE",
        help="take the password (and user) for HOST from a netrc file (default ~/.netrc); "
        "$POP3TAP_PASSWORD is read first",
    )
    parser.add_argument(
        "--captures",
        default="captures",
        metavar="DIR",
        help="directory for the session's capture (default: captures/)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up when the server is silent this long mid-answer (default 60)",
    )


def _add_script_options(parser: argparse.ArgumentParser) -> None:
    scripted = parser.add_argument_group("scripted use")
    scripted.add_argument(
        "--script", type=Path, metavar="FILE", help="run the commands in FILE ('-': stdin)"
    )
    scripted.add_argument(
        "--keep-going",
        action="store_true",
        help="go on after a command fails (the exit code still says so)",
    )
    scripted.add_argument(
        "--confirm-quit",
        action="store_true",
        help="let a script QUIT while messages it marked with DELE are pending",
    )


def _server(text: str, tls: bool) -> tuple[str, int]:
    default = 995 if tls else 110
    raw = text.strip()
    if not raw:
        raise CliError("the server is missing: pop3tap console HOST[:PORT]")
    if raw.startswith("[") and raw.endswith("]"):
        return raw[1:-1], default
    if ":" not in raw:
        return raw, default
    host, port = parse_endpoint(raw)
    if port == 0:
        raise CliError(f"malformed address {text!r}: the port cannot be 0")
    return host, port


def _read_script(path: Path | None) -> tuple[list[str], str]:
    if path is None or str(path) == "-":
        data = sys.stdin.buffer.read(MAX_SCRIPT_BYTES + 1)
        source = "stdin"
    else:
        source = str(path)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SCRIPT_BYTES + 1)
        except FileNotFoundError:
            raise CliError(f"--script {path}: no such file") from None
        except IsADirectoryError:
            raise CliError(f"--script {path}: is a directory") from None
        except OSError as exc:
            raise CliError(f"--script {path}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise CliError(f"{source}: a script may hold at most {MAX_SCRIPT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    return text.splitlines(), source


def _cmd_console(args: argparse.Namespace) -> int:
    from pop3tap.capture import CaptureError
    from pop3tap.console import open_recorder, run_script, run_session
    from pop3tap.console._core import Console
    from pop3tap.console._link import LinkConfig, Pop3Link
    from pop3tap.relay import Endpoint

    host, port = _server(args.server, args.tls)
    _check_tls_options(args)
    netrc_path = _netrc_path(args)
    interactive = args.script is None and sys.stdin.isatty()
    lines, source = ([], "") if interactive else _script_lines(args)
    if interactive and (args.keep_going or args.confirm_quit):
        raise CliError("--keep-going and --confirm-quit are for scripts (--script FILE)")
    captures = Path(args.captures)
    check_writable_directory(captures)

    from pop3tap.console._terminal import ScriptDisplay, TerminalDisplay, run_interactive

    display = TerminalDisplay() if interactive else ScriptDisplay(confirm_quit=args.confirm_quit)
    secrets, user = _secrets_and_user(args, host, netrc_path)
    config = LinkConfig(
        server=Endpoint(host, port),
        tls=args.tls,
        starttls=args.starttls,
        ca_file=args.upstream_ca,
        insecure=args.insecure,
        timeout=args.timeout,
    )
    try:
        recorder = open_recorder(captures, config)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    console = Console(
        Pop3Link(config, recorder), display, secrets, user=user, starttls=args.starttls
    )
    if interactive:
        prompt = f"pop3 {Endpoint(host, port)}> "
        return run_session(console, recorder, lambda c: run_interactive(c, prompt))
    code = run_session(
        console,
        recorder,
        lambda c: run_script(c, lines, keep_going=args.keep_going, source=source),
    )
    sys.stdout.flush()
    return code


def _check_tls_options(args: argparse.Namespace) -> None:
    """--insecure, --upstream-ca and --timeout make sense, and the CA file is usable."""
    if args.insecure and args.upstream_ca is not None:
        raise CliError("--insecure and --upstream-ca contradict each other")
    if (args.insecure or args.upstream_ca is not None) and not (args.tls or args.starttls):
        option = "--insecure" if args.insecure else "--upstream-ca"
        raise CliError(f"{option} is for TLS: add --tls (POP3S) or --starttls (STLS)")
    if math.isnan(args.timeout) or args.timeout <= 0:
        raise CliError("--timeout must be a positive number of seconds")
    if args.upstream_ca is not None and (args.tls or args.starttls):
        from pop3tap.tls import TlsSetupError, upstream_context

        try:  # an unusable CA file fails here, before anything is sent
            upstream_context(ca_file=args.upstream_ca)
        except TlsSetupError as exc:
            raise CliError(str(exc)) from None


def _netrc_path(args: argparse.Namespace) -> Path | None:
    from pop3tap.console import SecretError
    from pop3tap.console._secrets import check_private_file

    netrc_path = None if args.netrc is None else args.netrc.expanduser()
    if netrc_path is not None:
        try:
            check_private_file(netrc_path)
        except SecretError as exc:
            raise CliError(str(exc)) from None
    return netrc_path


def _script_lines(args: argparse.Namespace) -> tuple[list[str], str]:
    """The script's lines and where they came from, checked before anything is sent."""
    from pop3tap.console import check_script

    lines, source = _read_script(args.script)
    problem = None if args.confirm_quit else check_script(lines)
    if problem is not None:
        raise CliError(f"{source}: {problem}")
    return lines, source


def _secrets_and_user(
    args: argparse.Namespace, host: str, netrc_path: Path | None
) -> tuple[SecretSource, str | None]:
    from pop3tap.console import SecretError, SecretSource
    from pop3tap.console._terminal import ask_hidden

    secrets = SecretSource(
        host=host,
        environ=os.environ,
        netrc_path=netrc_path,
        # A script run from a terminal may still ask there (never when stdin is a pipe).
        ask=ask_hidden if sys.stdin.isatty() else None,
    )
    user = args.user
    if user is None:
        try:
            user = secrets.default_user()
        except SecretError as exc:
            raise CliError(str(exc)) from None
    if user is not None and (not user or not user.isprintable() or " " in user):
        # It goes on the USER line: a CR or LF would smuggle in another command.
        raise CliError(f"the user name {user!r} holds spaces or control characters")
    return secrets, user
