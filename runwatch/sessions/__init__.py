"""Application sessions: :class:`SessionMonitor` for in-process apps, and the sessions' storage layout.

An application session is a run of kind ``session`` (``run_id`` = session id)
in the same store, pipeline and dashboard as training runs (the layout:
:mod:`runwatch.session_events`). :class:`SessionMonitor` is the
synchronous facade of an application that manages user sessions (login,
expiry, errors, platform switches, suspicious activity).

- :mod:`.records`: the seed's records and :class:`SessionConfig`;
- :mod:`.monitor`: :class:`SessionMonitor` and :func:`get_session_monitor`;
- :mod:`.alerting`: its alerts, as ordinary alert-engine rules;
- :mod:`.health`: the health report;
- :mod:`.datacat`: datacat's sessions (what datacat's server does with them) for the web's datacat routes.
"""

from __future__ import annotations

from ..session_events import MONITOR_KIND as MONITOR_KIND
from ..session_events import SESSION_KIND as SESSION_KIND
from ..session_events import SYSTEM_RUN_ID as SYSTEM_RUN_ID
from ..session_events import decode_metric_value as decode_metric_value
from ..session_events import decode_session_tags as decode_session_tags
from ..session_events import encode_session_tags as encode_session_tags
from ..session_events import session_metadata as session_metadata
from ..session_events import session_status as session_status
from .monitor import SessionMonitor as SessionMonitor
from .monitor import get_session_monitor as get_session_monitor
from .records import SessionConfig as SessionConfig
from .records import SessionEvent as SessionEvent
from .records import SessionMetric as SessionMetric

__all__ = [
    "MONITOR_KIND",
    "SESSION_KIND",
    "SYSTEM_RUN_ID",
    "SessionConfig",
    "SessionEvent",
    "SessionMetric",
    "SessionMonitor",
    "decode_metric_value",
    "decode_session_tags",
    "encode_session_tags",
    "get_session_monitor",
    "session_metadata",
    "session_status",
]
