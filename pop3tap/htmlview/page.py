"""One self-contained HTML page: the model as inert JSON, the style and script inline.

Capture content never becomes markup: the model travels in a ``<script
type="application/json">`` element (which the browser does not run) with ``<``, ``>`` and
``&`` written as JSON escapes, and the page's script puts every string into the document
with ``textContent``. A Content-Security-Policy meta tag allows only the page's own style
and script (by hash), no network, no plugins, no forms and no base URL.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any, Final

__all__ = ["content_security_policy", "model_json", "render_page"]

_JSON_ESCAPES: Final = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


@cache
def _asset(name: str) -> str:
    return resources.files("pop3tap.htmlview").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def model_json(model: dict[str, Any]) -> str:
    """The model as JSON that is safe inside a ``<script type="application/json">``."""
    return json.dumps(model, ensure_ascii=False, separators=(",", ":")).translate(_JSON_ESCAPES)


def content_security_policy(*, live: bool = False) -> str:
    """The page's policy: its own style and script (by hash), nothing else; ``live`` pages
    may also fetch from the server that sent them."""
    connect = "'self'" if live else "'none'"
    return (
        "default-src 'none'; "
        f"style-src 'sha256-{_sha256(_asset('view.css'))}'; "
        f"script-src 'sha256-{_sha256(_asset('view.js'))}'; "
        f"connect-src {connect}; img-src 'none'; base-uri 'none'; form-action 'none'"
    )


def render_page(model: dict[str, Any], *, title: str = "pop3tap", live: bool = False) -> str:
    """The whole page. ``live``: the page asks its server for updates (``pop3tap view``)."""
    style = _asset("view.css")
    script = _asset("view.js")
    policy = content_security_policy(live=live)
    safe_title = (
        title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{safe_title}</title><style>{style}</style></head>\n"
        f'<body data-live="{"1" if live else "0"}">'
        '<header><h1>pop3tap</h1><input id="filter" type="search" '
        'placeholder="filter: verb:RETR status:-ERR flag:pipelined text  ( / )" '
        'aria-label="filter exchanges" autocomplete="off" spellcheck="false">'
        '<span id="count"></span><span id="help">j/k or \u2191/\u2193 move \u00b7 '
        "Enter opens a body \u00b7 / filters \u00b7 Esc clears</span></header>\n"
        '<main id="app"><noscript>This view needs JavaScript; '
        "<code>pop3tap show</code> prints the same session as text.</noscript></main>\n"
        f'<script type="application/json" id="model">{model_json(model)}</script>\n'
        f"<script>{script}</script></body></html>\n"
    )
