"""What goes over the wire (pure): paths and the reading of error answers."""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote

__all__ = ["error_message", "session_path"]


def session_path(session_id: str, suffix: str) -> str:
    """``/api/sessions/{id}{suffix}`` with the id escaped."""
    return f"/api/sessions/{quote(session_id, safe='')}{suffix}"


def error_message(status: int, body: bytes) -> tuple[str, str | None]:
    """The message and field of an error answer: runwatch's ``{"error": {...}}``, else its text.

    datacat answers errors as plain text (``Session not found``), which is the message.
    """
    try:
        document = json.loads(body)
        error = document["error"]
        return str(error.get("message") or error), error.get("field")
    except Exception:  # not runwatch's JSON: datacat's text, a proxy's page, an empty body
        text = body[:200].decode("utf-8", "replace").strip()
        return text or http.client.responses.get(status, "error"), None
