"""``pop3tap ca``: create pop3tap's local CA and export its certificate for clients."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pop3tap.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    Subparsers,
    epilog,
)
from pop3tap.cli._tls_options import add_ca_dir_option


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "ca",
        help="manage pop3tap's local certificate authority (for TLS interception)",
        description="pop3tap signs the certificates it shows TLS clients with its own CA. "
        "Create it once, then make your mail client trust the exported certificate.",
        epilog=epilog(
            "  pop3tap ca init                      create it (again: prints its fingerprint)\n"
            "  pop3tap ca show                      path, subject, expiry, fingerprint\n"
            "  pop3tap ca export --out pop3tap-ca.pem"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create the CA (private key mode 0600)")
    add_ca_dir_option(init)
    init.add_argument(
        "--key-type",
        choices=("ec", "rsa"),
        default="ec",
        help="CA key: ECDSA P-256 (default) or RSA 3072",
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=_cmd_init)
    show = actions.add_parser("show", help="print the CA's path, subject, expiry and fingerprint")
    add_ca_dir_option(show)
    show.set_defaults(handler=_cmd_show)
    export = actions.add_parser("export", help="write the CA certificate (PEM) for clients")
    add_ca_dir_option(export)
    export.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(handler=_cmd_export)


def _cmd_init(args: argparse.Namespace) -> int:
    from pop3tap.certs import CA_CERT_FILE, CertError, default_ca_dir, init_ca, load_ca

    directory = args.ca_dir if args.ca_dir is not None else default_ca_dir()
    if not args.force and (directory / CA_CERT_FILE).exists():
        # Already there: nothing to do, and nothing is replaced (clients trust this one).
        try:
            existing = load_ca(directory)
        except CertError as exc:
            raise CliError(str(exc), EXIT_FAILURE) from None
        print(f"pop3tap CA already exists in {existing.directory} (--force replaces it)")
        print(f"certificate (give it to clients): {existing.cert_path}")
        print(f"SHA-256 fingerprint: {existing.fingerprint}")
        return EXIT_OK
    try:
        ca = init_ca(args.ca_dir, key_type=args.key_type, force=args.force)
    except CertError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    print(f"created pop3tap CA in {ca.directory}")
    print(f"certificate (give it to clients): {ca.cert_path}")
    print(f"SHA-256 fingerprint: {ca.fingerprint}")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from pop3tap.certs import CertError, load_ca

    try:
        ca = load_ca(args.ca_dir)
    except CertError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    cert = ca.cert
    print(f"directory:   {ca.directory}")
    print(f"certificate: {ca.cert_path}")
    print(f"subject:     {cert.subject.rfc4514_string()}")
    print(f"valid from:  {cert.not_valid_before_utc.isoformat()}")
    print(f"expires:     {cert.not_valid_after_utc.isoformat()}")
    print(f"SHA-256:     {ca.fingerprint}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from pop3tap.certs import CertError, load_ca

    try:
        ca = load_ca(args.ca_dir)
    except CertError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    if args.out is None:
        sys.stdout.write(ca.cert_pem.decode("ascii"))
        return EXIT_OK
    try:
        args.out.write_bytes(ca.cert_pem)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}", EXIT_FAILURE) from None
    return EXIT_OK
