"""The read side of :class:`~runwatch.monitor.WebMonitor`: every query first flushes, then asks the
store (in remote mode the server's REST API, in the same shapes)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MonitorConfig

if TYPE_CHECKING:
    import pandas as pd

    from ..assemble import Assembly
    from ..remote.reader import RestReader
    from ..store.manager import DatabaseManager

__all__ = ["RunReading"]

logger = logging.getLogger("runwatch")


class RunReading:
    """Queries of a monitor's store (a base of :class:`~runwatch.monitor.WebMonitor`).

    Each one first waits until everything recorded before it is committed
    (:meth:`flush`), so a monitor always reads what it wrote.
    """

    config: MonitorConfig
    _db: DatabaseManager | RestReader | None
    _remote: bool
    _assembly: Assembly

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything recorded before the call is committed (the monitor's own)."""
        raise NotImplementedError

    @property
    def db(self) -> DatabaseManager | RestReader:
        """The :class:`DatabaseManager` of this monitor's store; in remote mode a
        :class:`~runwatch.remote.reader.RestReader` of the server (its read methods, the same shapes)."""
        if self._db is None:
            if self.config.server_url is not None:
                from ..remote.reader import RestReader

                self._db = RestReader(
                    self.config.server_url, token=self.config.server_token, before_read=self._await_delivery
                )
            else:
                from ..store.manager import DatabaseManager

                self._db = DatabaseManager(self.config.db_path)
        return self._db

    def _await_delivery(self) -> None:
        """Remote mode, before a read: wait (bounded) until the server has what this monitor sent."""
        if not self.wait_delivered(self.config.commit_timeout_seconds):
            logger.warning(
                "runwatch: the server has not acknowledged everything recorded yet (within %.1f s);"
                " reading what it has",
                self.config.commit_timeout_seconds,
            )

    def wait_delivered(self, timeout: float | None = 30.0) -> bool:
        """Remote mode: wait until the server has acknowledged everything recorded before the call.

        Embedded mode: the same as :meth:`flush`.

        Returns:
            ``False`` when ``timeout`` seconds passed first (the server is away:
            what is recorded waits in the spool and goes when it is back).
        """
        if not self.flush(timeout):
            return False
        from ..remote.sink import REMOTE_SINK

        sink = self._assembly.services.get(REMOTE_SINK)
        return True if sink is None else sink.wait_delivered(timeout)

    def get_training_runs(
        self, limit: int | None = None, status: str | None = None, *, kind: str | None = "training"
    ) -> list[dict[str, Any]]:
        """Get the list of training runs, newest first.

        Args:
            limit: the most runs to return.
            status: only runs with this status.
            kind: only runs of this kind: ``training`` (the default) or
                ``session`` (application sessions in the same store); ``None``
                for every kind.
        """
        self.flush()
        return self.db.get_training_runs(limit=limit, status=status, kind=kind)

    def get_run_metrics(
        self,
        run_id: str,
        metric_names: list[str] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        *,
        align: str = "step",
    ) -> pd.DataFrame:
        """Get a run's metrics as a DataFrame, one column per metric.

        Args:
            run_id: the run.
            metric_names: only these metrics; ``None`` for all.
            start_time: only calls at or after this time.
            end_time: only calls at or before this time.
            align: ``"step"`` (default): one row per global step, the calls of
                a step merged (see :meth:`DatabaseManager.get_run_metrics`);
                ``"call"``: one row per logging call, as logged.
        """
        self.flush()
        return self.db.get_run_metrics(run_id, metric_names, start_time, end_time, align=align)

    def get_runs_metrics(self, run_ids: list[str], metric_names: list[str] | None = None) -> pd.DataFrame:
        """Get several runs' metrics as one long-form DataFrame (run_id, step, timestamp, metric, value).

        See :meth:`DatabaseManager.get_runs_metrics`.
        """
        self.flush()
        return self.db.get_runs_metrics(run_ids, metric_names)

    def get_run_histograms(self, run_id: str, name: str) -> pd.DataFrame:
        """Get a run's histograms of ``name`` as a DataFrame, one row per logged histogram, by step.

        The histograms logged before this call are binned and stored first.
        Columns as :meth:`DatabaseManager.get_run_histograms` gives them
        (``step``, ``timestamp``, the summary, ``bin_edges`` and ``counts``).
        """
        self.flush()
        return self.db.get_run_histograms(run_id, name)

    def get_run_events(
        self,
        run_id: str,
        event_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Get a run's events, oldest first."""
        self.flush()
        return self.db.get_run_events(run_id, event_type, start_time, end_time)

    def get_run_summary(self, run_id: str) -> dict[str, Any]:
        """Get the summary of a run (status, times, counts, per-metric statistics)."""
        self.flush()
        return self.db.get_run_summary(run_id)

    def get_alerts(self, run_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Alert instances and their current state, from this monitor's store.

        Args:
            run_id: only this run's alerts; ``None`` for every run.
            state: ``pending``, ``firing`` or ``resolved``; ``None`` means
                pending and firing (what is active now).

        Returns:
            Dicts with ``rule``, ``run_id``, ``state``, ``severity``, ``value``,
            ``labels``, ``annotations``, ``active_since`` and ``updated_at``
            (epoch seconds).
        """
        self.flush()
        return self.db.get_alerts(run_id, state)

    def export_run_data(self, run_id: str, output_dir: Path, include_snapshots: bool = True) -> Path:
        """Export a run to a ``.zip`` (run.json, metrics, events.jsonl, state history).

        Returns:
            The path of the archive.
        """
        self.flush()
        if self._remote:
            from ..remote.reader import RestReader

            reader = self.db
            assert isinstance(reader, RestReader)
            return reader.export_run(run_id, Path(output_dir), include_snapshots=include_snapshots)
        from ..store.export import export_run

        return export_run(self.config.db_path, run_id, Path(output_dir), include_snapshots=include_snapshots)
