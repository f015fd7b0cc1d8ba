"""The HTML session view: ``pop3tap show --format html`` and ``pop3tap view``."""

from __future__ import annotations

from pop3tap.htmlview.model import ViewOptions, build_model, session_model
from pop3tap.htmlview.page import model_json, render_page

__all__ = ["ViewOptions", "build_model", "model_json", "render_page", "session_model"]
