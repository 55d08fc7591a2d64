"""One request at a time, in the server's dialect (I/O): what blocking calls and periodic work send.

The dialect is asked once of ``GET /health`` (see ``_wire``), before the first request
whose body differs between runwatch's strict routes and datacat's contract.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from ._errors import ClientClosedError, DatacatConnectionError, DatacatError, describe
from ._transport import Transport
from ._wire import (
    DATACAT,
    StateDeduper,
    datacat_request,
    dialect_from_health,
    error_message,
    runwatch_request,
    session_path,
)

__all__ = ["ACCEPTED", "Requester"]

#: What datacat's daemon answers a call it accepted; runwatch's client answers it for the
#: calls it handles locally (counters, histograms, repeated states, heartbeat pauses).
ACCEPTED: Final = {"status": "ok"}


class Requester:
    """Sends single requests to one server and reads its answers (thread-safe).

    Args:
        transport: sends the requests.
        headers: sent with every request (content type, token).
        base_url: the server, for messages.
        dialect: ``"datacat"`` or ``"runwatch"``; ``None``: ask ``GET /health`` when first needed.
    """

    def __init__(self, transport: Transport, headers: Mapping[str, str], base_url: str, dialect: str | None) -> None:
        self.transport = transport
        self.headers = headers
        self.base_url = base_url
        self.closed = False
        self._dialect = dialect
        self._dialect_lock = threading.Lock()
        self._states = StateDeduper()
        self._states_lock = threading.Lock()

    def reset_after_fork(self) -> None:
        """In a forked child: new locks (another thread of the parent may have held one at the fork)."""
        self._dialect_lock = threading.Lock()
        self._states_lock = threading.Lock()

    @property
    def known_dialect(self) -> str | None:
        """The dialect, if it is known yet (no request is made)."""
        return self._dialect

    def dialect(self) -> str:
        """``"datacat"`` or ``"runwatch"``: asked once of ``GET /health`` (a blocking request).

        Raises:
            DatacatError: the server is unreachable or answers 5xx.
        """
        dialect = self._dialect
        if dialect is None:
            with self._dialect_lock:
                if self._dialect is None:
                    self._dialect = self._probe()
                dialect = self._dialect
        return dialect

    def _probe(self) -> str:
        try:
            status, data = self.transport("GET", "/health", None, self.headers)
        except (OSError, http.client.HTTPException) as exc:
            raise DatacatConnectionError(f"GET {self.base_url}/health: {describe(exc)}") from exc
        dialect = dialect_from_health(status, data)
        if dialect is None:
            raise DatacatError(status, error_message(status, data)[0])
        return dialect

    def state_changes(self, session_id: str, patch: dict[str, Any]) -> bool:
        """Whether a state update changes the session's state (a repeat is not sent to datacat)."""
        with self._states_lock:
            return self._states.changes(session_id, patch)

    def forget_state(self, session_id: str) -> None:
        """Forget a session's state (it ended, or an update was not applied)."""
        with self._states_lock:
            self._states.forget(session_id)

    def send(self, session_id: str, operation: dict[str, Any]) -> dict[str, Any] | None:
        """One operation as one request, in the server's dialect; the server's reply.

        Raises:
            DatacatError: the server refused or is unreachable.
        """
        kind = operation["op"]
        if kind == "heartbeat" or kind == "end":  # the same request in both dialects
            suffix, body = runwatch_request(operation)
        elif self.dialect() == DATACAT:
            if kind == "state" and not self.state_changes(session_id, operation["state"]):
                return dict(ACCEPTED)  # a repeated state: datacat's daemon drops it too
            suffix, body = datacat_request(operation)
        else:
            suffix, body = runwatch_request(operation)
        try:
            reply = self.request("POST", session_path(session_id, suffix), body)
        except BaseException:
            if kind == "state":  # not applied: the next update must not be taken for a repeat
                self.forget_state(session_id)
            raise
        return reply if isinstance(reply, dict) else None

    def request(self, method: str, path: str, document: Any) -> Any:
        """Send ``document`` as JSON (``None``: no body); the decoded answer.

        Raises:
            ClientClosedError: the client was closed.
            DatacatConnectionError: no answer.
            DatacatError: an answer >= 400, or one that is not JSON.
        """
        if self.closed:
            raise ClientClosedError
        body = None
        if document is not None:
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        try:
            status, data = self.transport(method, path, body, self.headers)
        except (OSError, http.client.HTTPException) as exc:
            raise DatacatConnectionError(f"{method} {self.base_url}{path}: {describe(exc)}") from exc
        if status >= 400:
            message, field = error_message(status, data)
            raise DatacatError(status, message, field)
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise DatacatError(status, f"the server's answer is not JSON: {data[:200]!r}") from None

    def read_session(self, session_id: str, query: Mapping[str, object]) -> dict[str, Any]:
        """``GET /api/sessions/{id}`` with ``query`` (runwatch's paging keys; datacat ignores them).

        Raises:
            DatacatError: unknown session (404), or the server is unreachable.
        """
        pairs = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in query.items())
        document = self.request("GET", session_path(session_id, f"?{pairs}" if pairs else ""), None)
        if not isinstance(document, dict):
            raise DatacatError(200, f"the server's answer is not a session: {document!r}")
        return document

    def read_all_sessions(self) -> list[dict[str, Any]]:
        """Every session: ``GET /api/data/sessions`` (datacat), or runwatch's session listing page by page.

        Raises:
            DatacatError: the server refused or is unreachable.
        """
        if self.dialect() == DATACAT:
            sessions = self.request("GET", "/api/data/sessions", None)
            if not isinstance(sessions, list):
                raise DatacatError(200, f"the server's answer is not a list of sessions: {sessions!r}")
            return sessions
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100_000):  # bounded: a server that never ends its pages is a bug
            query = "?limit=1000" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
            page = self.request("GET", "/api/sessions" + query, None)
            sessions = page.get("sessions") if isinstance(page, dict) else None
            if not isinstance(sessions, list):
                raise DatacatError(200, f"the server's answer is not a page of sessions: {page!r}")
            found += sessions
            cursor = page.get("next_cursor")
            if not cursor:
                return found
        raise DatacatError(200, "the server's session listing does not end")
