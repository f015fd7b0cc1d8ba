"""The views of a capture that ``pop3tap show`` prints: the Pop3.log-style text view
(``_lines.py``) and its JSON-lines form (``_json.py``), both streaming, secrets masked and
control characters escaped.
"""

from __future__ import annotations

from pop3tap.render._json import json_records, render_json
from pop3tap.render._lines import (
    MAX_SHOWN_LINE,
    CaptureSource,
    describe_transport_event,
    render_lines,
)

__all__ = [
    "MAX_SHOWN_LINE",
    "CaptureSource",
    "describe_transport_event",
    "json_records",
    "render_json",
    "render_lines",
]
