from __future__ import annotations
from pop3tap.cli._common import Subparsers


def add_subcommand(sub: Subparsers) -> None:
    pass
