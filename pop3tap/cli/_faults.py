"""``--fault``, ``--fault-preset`` and ``--fault-seed`` for ``record`` and ``replay``."""

from __future__ import annotations

import argparse
import secrets
import sys

from pop3tap.cli._common import CliError
from pop3tap.faults import PRESETS, FaultError, check_relay_fault, parse_fault, preset_faults

__all__ = ["add_fault_options", "fault_specs"]


def add_fault_options(parser: argparse.ArgumentParser, *, relay: bool) -> None:
    group = parser.add_argument_group(
        "faults",
        "Make the server misbehave on cue (docs/faults.md), e.g. --fault 'RETR#2:cut=500' "
        "--fault 'PASS:err=\"[IN-USE] Mailbox locked\"' --fault 'greeting:delay=2s'.",
    )
    group.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="WHERE:WHAT[,p=P,seed=N,times=N]; WHERE is greeting, *, VERB, 'VERB ARGS' or "
        "VERB#N; WHAT is delay=2s, slow=1KiB/s, cut=N, reset, stall, close, err=TEXT, "
        "garble or unsolicited=TEXT (repeatable)",
    )
    group.add_argument(
        "--fault-preset",
        choices=PRESETS,
        help="pick faults at random from a documented menu; the seed is printed",
    )
    group.add_argument(
        "--fault-seed",
        type=int,
        metavar="N",
        help="the seed of --fault-preset (repeat a run exactly)",
    )
    if relay:
        group.add_argument(
            "--fault-rewrite",
            action="store_true",
            help="allow err, garble and unsolicited in the relay: the client then sees "
            "answers the real server did not send (the server still gets only the "
            "client's bytes, and never a QUIT)",
        )


def fault_specs(args: argparse.Namespace, *, relay: bool) -> tuple[str, ...]:
    """The fault specs the options ask for, checked; raises :class:`CliError`."""
    specs = list(args.fault)
    if args.fault_seed is not None and args.fault_preset is None:
        raise CliError("--fault-seed goes with --fault-preset")
    if args.fault_preset is not None:
        seed = args.fault_seed if args.fault_seed is not None else secrets.randbelow(1 << 31)
        picked = preset_faults(args.fault_preset, seed)
        print(
            f"pop3tap: fault preset {args.fault_preset} with seed {seed} "
            f"(repeat it with --fault-preset {args.fault_preset} --fault-seed {seed}): "
            + "; ".join(picked),
            file=sys.stderr,
        )
        specs += picked
    for spec in specs:
        try:
            fault = parse_fault(spec)
            if relay:
                check_relay_fault(fault, rewrite=args.fault_rewrite)
        except FaultError as exc:
            raise CliError(str(exc)) from None
        workers = getattr(args, "workers", 1)
        if workers > 1 and (fault.times is not None or fault.probability < 1.0):
            # Each worker process keeps its own counts and numbers its own connections.
            raise CliError(
                f"fault {spec!r}: times= and p= count over the whole server, which "
                f"--workers {workers} splits into processes that each count alone; "
                "use --workers 1"
            )
    return tuple(specs)
