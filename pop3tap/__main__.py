"""``python -m pop3tap``: the command-line interface."""

from pop3tap.cli import main

raise SystemExit(main())
