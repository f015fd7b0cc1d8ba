"""``pop3tap lint``: RFC conformance findings for captures (docs/lint.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, Subparsers

if TYPE_CHECKING:
    from pop3tap.lint import CaptureReport, MailboxMemory

#: The end of ``--help``: examples and this command's own exit codes.
_EPILOG = """\
examples:
  pop3tap lint captures/                        findings grouped by session
  pop3tap lint captures/ --fail-on warning      gate a server's CI on warnings too
  pop3tap lint --rules                          every rule, its severity and RFC

exit codes:
  0  no finding at or above --fail-on
  1  a finding at or above --fail-on
  2  bad usage or unreadable input"""


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "lint",
        help="check captures against RFC 1939/2449/2595/5034/3206",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
        description="Report who broke which POP3 rule where: each finding has a severity, "
        "the exchange, the side at fault and the RFC section. Exit code 0 when no finding "
        "reaches --fail-on, 1 when one does, 2 for unreadable input.",
    )
    parser.add_argument(
        "captures", nargs="*", metavar="CAPTURE", help="capture files or directories"
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--fail-on",
        choices=("error", "warning", "info"),
        default="error",
        help="lowest severity that makes the exit code 1 (default error)",
    )
    parser.add_argument("--rules", action="store_true", help="list the rules and exit")
    parser.set_defaults(handler=_cmd_lint)


def _cmd_lint(args: argparse.Namespace) -> int:
    from pop3tap.capture import CaptureError, iter_capture_paths
    from pop3tap.lint import (
        JSON_VERSION,
        SEVERITIES,
        MailboxMemory,
    )

    if args.rules:
        _print_rules()
        return EXIT_OK
    if not args.captures:
        raise CliError("pop3tap lint: give at least one CAPTURE or directory (or --rules)")
    try:
        paths = iter_capture_paths(args.captures)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    if not paths:
        raise CliError(f"no capture files in {' '.join(args.captures)}")
    memory = MailboxMemory()
    threshold = SEVERITIES.index(args.fail_on)
    totals: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    unreadable = False
    json_out = args.format == "json"
    if json_out:
        sys.stdout.write(f'{{"format": "pop3tap-lint", "version": {JSON_VERSION}, "captures": [')
    for index, path in enumerate(paths):
        report = _lint_one(path, memory)
        if report.error is not None:
            unreadable = True
            if not json_out:
                print(f"pop3tap: {printable(report.error)}", file=sys.stderr)
                continue
        for severity, count in report.counts().items():
            totals[severity] += count
        if json_out:
            sys.stdout.write(("," if index else "") + "\n  " + json.dumps(report.as_json()))
        else:
            _print_text(report)
    failed = any(totals[s] for s in SEVERITIES[: threshold + 1])
    if json_out:
        summary = {"counts": totals, "fail_on": args.fail_on, "failed": failed}
        sys.stdout.write("\n], " + json.dumps(summary)[1:] + "\n")
    else:
        print(
            f"{len(paths)} capture(s): {totals['error']} error(s), "
            f"{totals['warning']} warning(s), {totals['info']} info"
        )
    if unreadable:
        return EXIT_USAGE
    return EXIT_FAILURE if failed else EXIT_OK


def _print_rules() -> None:
    from pop3tap.lint import RULES

    for rule in RULES.values():
        print(f"{rule.id:31} {rule.severity:8} {rule.side:8} {rule.rfc or '-':26} {rule.summary}")


def _lint_one(path: Path, memory: MailboxMemory) -> CaptureReport:
    """The capture's report; an unreadable capture's says why in ``error``."""
    from pop3tap.analysis import CaptureStream
    from pop3tap.capture import CaptureError
    from pop3tap.lint import CaptureReport, lint_capture

    try:
        return lint_capture(CaptureStream(path), memory)
    except CaptureError as exc:
        report = CaptureReport(path=str(path), session="", client="", upstream="")
        report.error = str(exc)
        report.complete = False
        return report


def _print_text(report: object) -> None:
    from pop3tap.lint import RULES, CaptureReport

    assert isinstance(report, CaptureReport)
    # Paths, header fields and quoted peer bytes come from hostile input: no terminal
    # controls reach the screen.
    head = printable(
        f"{report.path}  session {report.session}  {report.client} -> {report.upstream}"
    )
    if not report.findings:
        print(f"{head}: clean")
        return
    print(head)
    for finding in report.findings:
        rule = RULES[finding.rule]
        where = f"#{finding.seq}" if finding.seq is not None else "session"
        print(
            f"  {rule.severity:7} {finding.blamed:7} {where:>6}  {finding.rule} "
            f"({rule.rfc or 'capture'}): {printable(finding.message)}"
        )
        for quoted in (finding.tx, finding.rx):
            if quoted:
                print(f"      {printable(quoted)}")
    for rule_id, extra in sorted(report.suppressed.items()):
        print(f"  ... {extra} more {rule_id} finding(s) not shown")
