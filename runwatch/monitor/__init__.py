"""WebMonitor: the training-loop facade over the pipeline and the store.

Every ``update_*`` call validates its arguments, builds one immutable event
and hands it to the pipeline thread without waiting on I/O (see
:mod:`runwatch.pipeline.bridge`). Queries first flush, so a monitor always
reads what it wrote. Errors of runwatch's own (a full queue, a failing disk)
never raise here: they are counted in :meth:`WebMonitor.statistics`.

In remote mode (``MonitorConfig.server_url``) the same calls record into a
``runwatch serve`` on any machine: events go through the ``remote`` sink's
on-disk spool to the server's ingest, queries go to its REST API
(:class:`~runwatch.remote.reader.RestReader`), and the dashboard is the
server's.

- :mod:`.web_monitor`: :class:`WebMonitor` (run lifecycle, recording, plumbing);
- :mod:`.reading`: its queries of the store;
- :mod:`.media`: its images and histograms;
- :mod:`.arguments`: argument checks, run ids and the closing line;
- :mod:`.process`: closing open monitors at exit, letting them go in a forked child.
"""

from __future__ import annotations

from .arguments import closing_hint as closing_hint
from .arguments import new_run_id as new_run_id
from .web_monitor import WebMonitor as WebMonitor

__all__ = ["WebMonitor"]
