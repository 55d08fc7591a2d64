"""The one JSON wire codec: every JSON form that crosses the network, in and out.

- :mod:`.documents`: parsing a body (integers beyond 64 bits refused),
  numbers JSON cannot hold (NaN, ±Inf), serialising;
- :mod:`.events`: an event's wire form out and in, and an alert's one JSON form;
- :mod:`.ingest`: ingest bodies (``POST /api/ingest``, ``/ws/ingest``);
- :mod:`.sessions`: the sessions REST API's bodies;
- :mod:`.messages`: websocket messages, both ways.

Pure code above the event model: no I/O. A document that is refused raises
:class:`~runwatch.exceptions.WireError`, which carries the HTTP status that
answers it and the path of the bad field.
"""

from __future__ import annotations

from ..exceptions import WireError as WireError
from .documents import NON_FINITE_FROM_JSON as NON_FINITE_FROM_JSON
from .documents import dumps as dumps
from .documents import json_number as json_number
from .documents import loads_json as loads_json
from .documents import number_from_json as number_from_json
from .documents import parse_document as parse_document
from .events import alert_fields as alert_fields
from .events import alert_to_wire as alert_to_wire
from .events import event_from_dict as event_from_dict
from .events import event_to_dict as event_to_dict
from .events import event_to_ingest as event_to_ingest
from .events import event_to_wire as event_to_wire
from .ingest import IngestBody as IngestBody
from .ingest import check_batch_id as check_batch_id
from .ingest import content_digest as content_digest
from .ingest import parse_ingest_body as parse_ingest_body

__all__ = [
    "NON_FINITE_FROM_JSON",
    "IngestBody",
    "WireError",
    "alert_fields",
    "alert_to_wire",
    "check_batch_id",
    "content_digest",
    "dumps",
    "event_from_dict",
    "event_to_dict",
    "event_to_ingest",
    "event_to_wire",
    "json_number",
    "loads_json",
    "number_from_json",
    "parse_document",
    "parse_ingest_body",
]
