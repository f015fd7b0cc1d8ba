"""How the core's value classes pickle and copy, the same in both builds.

A dataclass pickles by creating a bare instance and filling in its fields. mypyc's compiled
classes cannot be created bare (their ``__new__`` runs ``__init__``), so the events, the
reader's events, the verb table's rows and the summary say how to rebuild themselves: call
the class with every field, in the order their constructors take them. The pickle names
only the class, so a value pickled by one build loads in the other.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def rebuild_by_fields(value: Any) -> tuple[type[Any], tuple[object, ...]]:
    """``value.__reduce__()`` for a dataclass whose constructor takes its fields in order."""
    return type(value), tuple(getattr(value, spec.name) for spec in fields(value))
