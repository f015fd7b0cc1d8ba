"""Command-line options for pop3tap's own TLS: the certificate it shows and its CA."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_ca_dir_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--ca-dir``, shared by ``ca``, ``record`` and ``replay``."""
    parser.add_argument(
        "--ca-dir",
        type=Path,
        metavar="DIR",
        help="pop3tap's CA directory (default: ${XDG_CONFIG_HOME:-~/.config}/pop3tap/ca)",
    )


def add_certificate_options(group: argparse._ArgumentGroup) -> None:
    """``--cert``/``--key`` (a chain to show clients) and ``--ca-dir`` (pop3tap's CA)."""
    group.add_argument("--cert", type=Path, metavar="FILE", help="certificate chain (PEM)")
    group.add_argument("--key", type=Path, metavar="FILE", help="private key of --cert (PEM)")
    add_ca_dir_option(group)
