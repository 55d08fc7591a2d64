"""How application sessions are laid out in the store: re-exported from :mod:`runwatch.session_events`."""

from __future__ import annotations

from ..session_events import MONITOR_KIND as MONITOR_KIND
from ..session_events import RUN_STATUSES_OF as RUN_STATUSES_OF
from ..session_events import SESSION_KIND as SESSION_KIND
from ..session_events import SYSTEM_RUN_ID as SYSTEM_RUN_ID
from ..session_events import decode_metric_value as decode_metric_value
from ..session_events import decode_session_tags as decode_session_tags
from ..session_events import encode_session_tags as encode_session_tags
from ..session_events import session_metadata as session_metadata
from ..session_events import session_status as session_status

__all__ = [
    "MONITOR_KIND",
    "RUN_STATUSES_OF",
    "SESSION_KIND",
    "SYSTEM_RUN_ID",
    "decode_metric_value",
    "decode_session_tags",
    "encode_session_tags",
    "session_metadata",
    "session_status",
]
