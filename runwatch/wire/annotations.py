"""A run's tags and note: their rules, and the body of ``PATCH /api/runs/{run_id}``.

What a person says about a run: tags (short labels to filter by) and a
free-text note. The same rules hold wherever they come from — the REST API,
``DatabaseManager.annotate_run``, an imported archive — so they live here,
below the store that keeps them. Pure code.
"""

from __future__ import annotations

from typing import Any, Final

from ..exceptions import WireError
from .documents import json_type, parse_document

__all__ = [
    "ANNOTATION_BODY_SCHEMA",
    "MAX_NOTE_CHARS",
    "MAX_TAGS",
    "MAX_TAG_CHARS",
    "check_note",
    "check_tags",
    "parse_annotation_body",
]

#: The most tags one run can have.
MAX_TAGS: Final = 50
#: The longest tag.
MAX_TAG_CHARS: Final = 64
#: The longest note.
MAX_NOTE_CHARS: Final = 10_000

#: One line with something besides spaces (a tag as stored).
_TAG_PATTERN: Final = r"^[^\n\r\t]*[^\s][^\n\r\t]*$"

#: The body of ``PATCH /api/runs/{run_id}``, for ``/openapi.json``.
ANNOTATION_BODY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "tags": {
            "type": "array",
            "maxItems": MAX_TAGS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS, "pattern": _TAG_PATTERN},
        },
        "note": {"type": "string", "maxLength": MAX_NOTE_CHARS},
    },
    "minProperties": 1,
    "additionalProperties": False,
}


def check_tags(tags: object) -> list[str]:
    """The tags as stored: stripped, without duplicates, in the order given.

    Raises:
        TypeError: ``tags`` is not a list of strings.
        ValueError: an empty or too long tag, or too many tags.
    """
    if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)):
        raise TypeError(f"tags must be a list of strings, got {tags!r}")
    out: list[str] = []
    for tag in tags:
        if type(tag) is not str:
            raise TypeError(f"tags must contain strings, got {tag!r}")
        text = tag.strip()
        if not text:
            raise ValueError("a tag must not be empty")
        if len(text) > MAX_TAG_CHARS or any(ch in text for ch in "\n\r\t"):
            raise ValueError(f"a tag is one line of at most {MAX_TAG_CHARS} characters, got {text[:80]!r}")
        if text not in out:
            out.append(text)
    if len(out) > MAX_TAGS:
        raise ValueError(f"a run has at most {MAX_TAGS} tags, got {len(out)}")
    return out


def check_note(note: object) -> str:
    """The note as stored.

    Raises:
        TypeError: ``note`` is not a string.
        ValueError: it is longer than :data:`MAX_NOTE_CHARS`.
    """
    if type(note) is not str:
        raise TypeError(f"note must be a string, got {note!r}")
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"note must be at most {MAX_NOTE_CHARS} characters, got {len(note)}")
    return note


def parse_annotation_body(body: bytes) -> tuple[list[str] | None, str | None]:
    """The tags and note a ``PATCH /api/runs/{run_id}`` body sets (``None``: left as they are).

    Raises:
        WireError: 400 for malformed JSON; 422 naming the field for anything
            else (not an object, an unknown field, neither field, a bad tag or
            note, a ``null``).
    """
    document = parse_document(body)
    if not isinstance(document, dict):
        raise WireError(422, f"expected a JSON object with tags and/or note, got {json_type(document)}")
    unknown = [key for key in document if key not in ("tags", "note")]
    if unknown:
        raise WireError(422, f"unknown field {unknown[0]!r}", unknown[0])
    if not document:
        raise WireError(422, "give tags, note or both")
    tags: list[str] | None = None
    note: str | None = None
    for field in ("tags", "note"):
        if field not in document:
            continue
        if document[field] is None:
            raise WireError(422, f"{field} must not be null", field)
        try:
            if field == "tags":
                tags = check_tags(document[field])
            else:
                note = check_note(document[field])
        except (TypeError, ValueError) as exc:
            raise WireError(422, str(exc), field) from None
    return tags, note
