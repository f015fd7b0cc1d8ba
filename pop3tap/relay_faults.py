"""Moved to :mod:`pop3tap.relay._faults`; this name keeps older imports working."""

from pop3tap.relay._faults import Armed, FaultGate, Step, StepKind

__all__ = ["Armed", "FaultGate", "Step", "StepKind"]
