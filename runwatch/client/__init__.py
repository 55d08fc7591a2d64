"""datacat's Python client, as a superset, for runwatch and datacat servers (standard library only).

The public API of datacat's client (OriginalDaemon/datacat at 77ab370; see
docs/datacat.md): :func:`create_session`, :class:`DatacatClient`, :class:`Session`,
:class:`AsyncSession`, :class:`HeartbeatMonitor`, :class:`DatacatHandler`,
:class:`Timer`, with datacat's names, parameters, defaults and return values, and the
seed's calls (``log_event(name, data)``, ``log_exception(extra_data=...)``) beside them.
There is no daemon: what datacat's daemon does (counter and histogram totals,
keep-alive heartbeats, hang detection, dropping repeated states, ``machine_id``) is done
in the application's process.

The server's dialect is found once by ``GET /health``: datacat's contract (datacat, and
runwatch once it serves it), or runwatch's strict session routes, where datacat's extra
fields travel inside ``data`` (see ``_wire``).

**Blocking mode** (the default, as in datacat): each call is one HTTP request
on a keep-alive connection of the calling thread and answers the server's reply;
a 4xx answer raises :class:`DatacatError`, an unreachable server
:class:`DatacatConnectionError`.

**Non-blocking mode** (``blocking=False``): a call checks its arguments
(``TypeError``/``ValueError`` at the call), copies them into a bounded queue
and returns in about a microsecond. A sender thread posts them in batches to
``POST /api/sessions/{id}/batch``; each batch has a globally unique ``batch_id``
that it keeps across retries, so the server applies it once. When the server
is unreachable (or answers 5xx/429) the batch is retried with capped
exponential backoff while new calls wait in the queue; when the queue is full
the newest call is dropped and counted. runwatch's own trouble never raises
into the application and never blocks it: see :meth:`DatacatClient.statistics`.
At interpreter exit the queue is flushed with a deadline; what is still
undelivered then is written to ``spool_dir`` (when given) and sent by the next
client that uses the same directory.

Fork safety: a forked child gets an empty queue, a fresh sender thread on its
first call, new connections and new batch ids; it never touches its parent's
sockets or batches. A server without ``/batch`` (datacat) gets each queued call as
its own request, in order (at least once: datacat has no idempotency key).

This package imports nothing but the standard library (and nothing of
runwatch's server), so applications can use it without the server's
dependencies. Its modules, by responsibility:

* ``_checks`` — argument checks and payload copies at the call (pure);
* ``_operations`` — a call's arguments to a neutral operation (pure);
* ``_wire`` — the two server dialects: request bodies, answers, state dedupe (pure);
* ``_batching`` — batches, retry and bisection decisions (pure);
* ``_aggregate`` — counters as running totals, histograms as buckets (pure);
* ``_options`` — a client's options, checked once (pure);
* ``_machine`` — datacat's ``machine_id`` and the host name;
* ``_transport`` — keep-alive HTTP connections (I/O);
* ``_requests`` — one request at a time in the server's dialect (I/O);
* ``_sender`` — the non-blocking queue and its sender thread;
* ``_spool`` — the exit spool;
* ``_ticker``, ``_periodic`` — the daemon's periodic work: totals, keep-alives;
* ``_heartbeat`` — the hang watch and its monitor thread;
* ``_process`` — the process hooks (exit, fork);
* ``_client`` — :class:`DatacatClient`;
* ``_session`` — :class:`Session`, :class:`Timer`;
* ``_create`` — :func:`create_session`;
* ``_async`` — :class:`AsyncSession`;
* ``_logging`` — :class:`DatacatHandler`.

Exceptions::

    DatacatError                      an answer >= 400 (status, message, field)
     ├── DatacatConnectionError (ConnectionError)   no answer: status is None
     └── ClientClosedError (RuntimeError)           a blocking call after close()
"""

from __future__ import annotations

from ._aggregate import DEFAULT_BUCKETS as DEFAULT_BUCKETS
from ._async import AsyncSession as AsyncSession
from ._batching import MAX_BATCH_BYTES as MAX_BATCH_BYTES
from ._batching import Batch as Batch
from ._batching import backoff_delay as backoff_delay
from ._batching import encode_batch as encode_batch
from ._batching import is_bisectable as is_bisectable
from ._batching import is_retryable as is_retryable
from ._batching import plan_batches as plan_batches
from ._client import DatacatClient as DatacatClient
from ._create import create_session as create_session
from ._errors import ClientClosedError as ClientClosedError
from ._errors import DatacatConnectionError as DatacatConnectionError
from ._errors import DatacatError as DatacatError
from ._heartbeat import HeartbeatMonitor as HeartbeatMonitor
from ._heartbeat import HeartbeatWatch as HeartbeatWatch
from ._logging import DatacatHandler as DatacatHandler
from ._machine import machine_id as machine_id
from ._sender import ClientStatistics as ClientStatistics
from ._session import Session as Session
from ._session import Timer as Timer
from ._transport import HTTPTransport as HTTPTransport
from ._transport import Transport as Transport
from ._wire import DEFAULT_BASE_URL as DEFAULT_BASE_URL
from ._wire import exception_data as exception_data

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_BUCKETS",
    "MAX_BATCH_BYTES",
    "AsyncSession",
    "Batch",
    "ClientClosedError",
    "ClientStatistics",
    "DatacatClient",
    "DatacatConnectionError",
    "DatacatError",
    "DatacatHandler",
    "HTTPTransport",
    "HeartbeatMonitor",
    "HeartbeatWatch",
    "Session",
    "Timer",
    "Transport",
    "backoff_delay",
    "create_session",
    "encode_batch",
    "exception_data",
    "is_bisectable",
    "is_retryable",
    "machine_id",
    "plan_batches",
]
