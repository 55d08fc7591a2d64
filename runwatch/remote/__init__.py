"""Remote mode: producers on any machine record into one ``runwatch serve``, and offline runs are uploaded later.

* :mod:`.spool` — the bounded on-disk spool of ingest batches (pure file I/O);
* :mod:`.sender` — the thread that sends spooled batches, each until acknowledged;
* :mod:`.sink` — the ``remote`` pipeline sink: events → batches → spool → server;
* :mod:`.reader` — :class:`RestReader`, the read methods of ``DatabaseManager`` over the REST API;
* :mod:`.sync` — ``runwatch sync``: a store's runs or a spool, uploaded idempotently;
* :mod:`.server_url` — the server's URL checked, and shown without secrets (requests go through
  :class:`runwatch.client.HTTPTransport`).
"""
