"""The chunk store's figures, each beside its baseline from the same run.

    python benchmarks/bench_store.py [--quick] [--repeat N]

1. Codecs: bytes per value and encode/decode speed of each candidate on
   realistic columns (16,384-point chunks).
2. Committed values/s for 1, 4 and 100 scalars per call: the chunk store
   (columns, chunks, commit) against raw sqlite3 writing the row layout of schema 8
   (one row per call, a JSON array of values), same calls, same
   transactions of 20,000 calls, interleaved repetitions; bytes per value
   on disk for both.
3. Open-chunk persistence: rewriting the open chunk at every commit against
   appending segments (merged after 8, or only at sealing) and size-tiered
   segments, at 10, 100 and 1,000 calls per commit.
4. Reads: one metric of a 1M- and a 5M-call run into a DataFrame, against
   a raw sqlite3 read of the row layout (1M: every call's row fetched, its
   JSON array parsed) and ``numpy.load`` of the same columns.
   Every read connection (baselines too) sets ``PRAGMA mmap_size``, as the
   store's read connections will.
5. Charts from a fresh process: 1,000 buckets of min/max (a 2,000-point chart)
   of 1M- and 10M-call runs, against the row layout's raw read + downsampling (1M).
6. Migration of a 1M-call store of the row layout into chunks: the registered
   schema step 9 → 10, in its one transaction.
7. Peak RSS of a process writing 2M values through each writer (the calls
   are made batch by batch, so the writer's own memory shows).

Workload: a noisy decaying loss (full float64 mantissa), a batch accuracy
(k/256), a warm-up + cosine learning rate, and an integer sample counter;
100 scalars per call are 70 noisy floats (gradient norms), 10 accuracies,
10 schedules and 10 counters. Steps count calls; times advance ~1 ms with
jitter. Results print as tables and go to ``benchmarks/results/store.json``.
Everything runs on local files; every loop is bounded in count.
"""

from __future__ import annotations

import argparse
import gc
import json
import lzma
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from runwatch.events import Metric
from runwatch.store.chunk_reads import read_series
from runwatch.store.chunk_schema import CHUNK_VERSION
from runwatch.store.chunk_store import SQLiteSeriesStore
from runwatch.store.codecs import (
    decode_float_column,
    decode_int_column,
    encode_float_column,
    encode_int_column,
)
from runwatch.store.connections import apply_pragmas
from runwatch.store.frames import series_frame
from runwatch.store.schema import migrate, prepare_database
from runwatch.store.series import SeriesBuilder

RESULTS = Path(__file__).parent / "results"
TS = 1_700_000_000.0
CALLS_PER_TRANSACTION = 20_000
TOTAL = 10_000_000  # the schedule's horizon, so every run sees the same curve shape
READ_MMAP_BYTES = 1 << 30  # PRAGMA mmap_size of every read connection, baselines included

try:  # the stdlib's zstd from Python 3.14; only measured when installed
    from backports import zstd as _zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - optional
    _zstd = None


# -- workload ------------------------------------------------------------------------


def columns_for(scalars: int, start: int, count: int) -> tuple[list[str], list[np.ndarray]]:
    """Realistic metric columns for calls ``start`` to ``start + count`` (deterministic)."""
    i = np.arange(start, start + count, dtype=np.float64)
    rng = np.random.default_rng(start * 7 + scalars)

    def loss(scale: float = 1.0) -> np.ndarray:
        return scale * (2.5 * np.exp(-i / 2e5) + 0.1) + 0.05 * scale * rng.standard_normal(count) * np.exp(-i / 4e5)

    def accuracy(ceiling: float = 0.95) -> np.ndarray:
        p = np.clip(0.5 + (ceiling - 0.5) * (1 - np.exp(-i / 1e5)), 0, 1)
        return rng.binomial(256, p) / 256.0

    def schedule(base: float = 3e-4) -> np.ndarray:
        return base * np.minimum(1.0, i / 10_000) * 0.5 * (1 + np.cos(np.pi * i / TOTAL))

    def counter(multiple: int = 256) -> np.ndarray:
        return (np.arange(start, start + count, dtype=np.int64) + 1) * multiple

    if scalars == 1:
        return ["loss"], [loss()]
    if scalars == 4:
        return ["loss", "accuracy", "lr", "samples"], [loss(), accuracy(), schedule(), counter()]
    names: list[str] = []
    columns: list[np.ndarray] = []
    for k in range(70):
        names.append(f"grad_norm/layer{k}")
        columns.append(np.abs(rng.standard_normal(count)) * np.exp(-i / (3e5 + k * 1e4)) * (1 + k / 10) + 0.01)
    for k in range(10):
        names.append(f"accuracy/head{k}")
        columns.append(accuracy(0.6 + k * 0.035))
    for k in range(10):
        names.append(f"lr/group{k}")
        columns.append(schedule(1e-4 * (k + 1)))
    for k in range(10):
        names.append(f"count/{k}")
        columns.append(counter(k + 1))
    return names, columns


def make_calls(run_id: str, scalars: int, start: int, count: int) -> list[Metric]:
    names, columns = columns_for(scalars, start, count)
    rng = np.random.default_rng(start)
    times = (TS + (np.arange(start, start + count) * 0.001) + rng.uniform(0, 0.0003, count)).tolist()
    rows = list(zip(*[column.tolist() for column in columns], strict=True))
    return [
        Metric(run_id, t, dict(zip(names, row, strict=True)), start + k)
        for k, (t, row) in enumerate(zip(times, rows, strict=True))
    ]


def batches(run_id: str, scalars: int, calls: int, size: int = CALLS_PER_TRANSACTION) -> Iterator[list[Metric]]:
    for start in range(0, calls, size):
        yield make_calls(run_id, scalars, start, min(size, calls - start))


# -- writers -------------------------------------------------------------------------


def new_store(path: Path, run_ids: list[str], *, chunks: bool) -> sqlite3.Connection:
    prepare_database(str(path))
    connection = sqlite3.connect(path, isolation_level=None)
    apply_pragmas(connection)
    if not chunks:
        migrate(connection, CHUNK_VERSION - 1)  # the row layout: one metric_rows row per call
    for run_id in run_ids:
        connection.execute("INSERT INTO runs (run_id, start_time, updated_at) VALUES (?, ?, ?)", (run_id, TS, TS))
    return connection


class BaselineWriter:
    """Raw sqlite3 writing the row layout (schema 9): one metric_rows row per call, values as a JSON array."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.runs = dict(connection.execute("SELECT run_id, id FROM runs").fetchall())
        self.keysets: dict[tuple[str, ...], int] = {}
        self.next_row = 0

    def write(self, calls: list[Metric]) -> None:
        keysets = self.keysets
        rows = []
        row = self.next_row
        for call in calls:
            names = tuple(call.values)
            keyset = keysets.get(names)
            if keyset is None:
                cursor = self.connection.execute(
                    "INSERT INTO metric_keysets (names) VALUES (?)", (orjson.dumps(names).decode(),)
                )
                keyset = keysets[names] = int(cursor.lastrowid or 0)
            rows.append(
                (
                    self.runs[call.run_id],
                    row,
                    call.step,
                    call.timestamp,
                    keyset,
                    orjson.dumps(list(call.values.values())).decode(),
                    None,
                )
            )
            row += 1
        self.connection.execute("BEGIN")
        self.connection.executemany("INSERT INTO metric_rows VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self.connection.execute("COMMIT")
        self.next_row = row


def stored_bytes(connection: sqlite3.Connection) -> int:
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    free = connection.execute("PRAGMA freelist_count").fetchone()[0]
    size = connection.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def empty_bytes(directory: Path, *, chunks: bool) -> int:
    connection = new_store(directory / f"empty-{chunks}.db", ["r"], chunks=chunks)
    size = stored_bytes(connection)
    connection.close()
    return size


def time_write(directory: Path, name: str, calls: list[list[Metric]], *, chunks: bool) -> tuple[float, float, int]:
    """Wall and CPU seconds from the first call to the last commit, and the bytes the run added to the file."""
    path = directory / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    connection = new_store(path, ["run"], chunks=chunks)
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    if chunks:
        store = SQLiteSeriesStore(connection)
        for batch in calls:
            store.write_batch(batch)
    else:
        writer = BaselineWriter(connection)
        for batch in calls:
            writer.write(batch)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    size = stored_bytes(connection)
    connection.close()
    return elapsed, cpu, size


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


# -- 1. codecs -----------------------------------------------------------------------


def shuffled(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values.view(np.uint8).reshape(-1, values.itemsize).T).tobytes()


def unshuffled(raw: bytes, dtype: Any, count: int) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    return np.ascontiguousarray(np.frombuffer(raw, np.uint8).reshape(width, count).T).view(dtype).reshape(count)


def delta_of_delta(values: np.ndarray) -> np.ndarray:
    """Zigzagged delta-of-delta (Gorilla's timestamp transform), without bit packing."""
    unsigned = values.view(np.uint64)
    dod = np.diff(np.diff(unsigned, prepend=np.uint64(0)), prepend=np.uint64(0)).view(np.int64)
    return ((dod << 1) ^ (dod >> 63)).view(np.uint64)


def undo_delta_of_delta(zigzag: np.ndarray) -> np.ndarray:
    dod = (zigzag >> np.uint64(1)) ^ (np.uint64(0) - (zigzag & np.uint64(1)))
    return np.cumsum(np.cumsum(dod)).view(np.int64)


def float_candidates() -> dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes, int], np.ndarray]]]:
    candidates: dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes, int], np.ndarray]]] = {
        "raw": (lambda v: v.tobytes(), lambda b, n: np.frombuffer(b, np.float64)),
        "zlib-1": (lambda v: zlib.compress(v.tobytes(), 1), lambda b, n: np.frombuffer(zlib.decompress(b), np.float64)),
        "shuffle + zlib-1": (
            lambda v: zlib.compress(shuffled(v), 1),
            lambda b, n: unshuffled(zlib.decompress(b), np.float64, n),
        ),
        "shuffle + lzma-1": (
            lambda v: lzma.compress(shuffled(v), preset=1),
            lambda b, n: unshuffled(lzma.decompress(b), np.float64, n),
        ),
        "chosen: planes, zlib where entropy pays, XOR if smaller": (encode_float_column, decode_float_column),
    }
    if _zstd is not None:
        candidates["shuffle + zstd-1 (C, PyPI)"] = (
            lambda v: _zstd.compress(shuffled(v), 1),
            lambda b, n: unshuffled(_zstd.decompress(b), np.float64, n),
        )
    return candidates


def int_candidates() -> dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes, int], np.ndarray]]]:
    return {
        "raw": (lambda v: v.tobytes(), lambda b, n: np.frombuffer(b, np.int64)),
        "zlib-1": (lambda v: zlib.compress(v.tobytes(), 1), lambda b, n: np.frombuffer(zlib.decompress(b), np.int64)),
        "delta-of-delta + zigzag + shuffle + zlib-1": (
            lambda v: zlib.compress(shuffled(delta_of_delta(v)), 1),
            lambda b, n: undo_delta_of_delta(unshuffled(zlib.decompress(b), np.uint64, n)),
        ),
        "chosen: delta or offset, narrowed, zlib where entropy pays": (encode_int_column, decode_int_column),
    }


def bench_codecs(points: int) -> list[dict[str, Any]]:
    names, columns = columns_for(4, 0, points)
    rng = np.random.default_rng(5)
    loss32 = columns[0].astype(np.float32).astype(np.float64)
    times = np.round((TS + np.arange(points) * 0.001 + rng.uniform(0, 0.0003, points)) * 1e6).astype(np.int64)
    cases: list[tuple[str, np.ndarray]] = [
        ("loss (noisy float64)", columns[0]),
        ("loss from float32 (.item())", loss32),
        ("accuracy k/256", columns[1]),
        ("lr warm-up + cosine", columns[2]),
        ("samples counter (int)", columns[3]),
        ("step (int)", np.arange(points, dtype=np.int64)),
        ("time µs, ~1 ms jitter (int)", times),
    ]
    chunk = 16_384
    rows: list[dict[str, Any]] = []
    for label, data in cases:
        candidates = int_candidates() if data.dtype == np.int64 else float_candidates()
        for codec, (encode, decode) in candidates.items():
            sample = data if "lzma" not in codec else data[: max(chunk, points // 8)]
            pieces = [sample[k : k + chunk] for k in range(0, len(sample), chunk)]
            started = time.process_time()
            blobs = [encode(piece) for piece in pieces]
            encode_s = time.process_time() - started
            started = time.process_time()
            decoded = [decode(blob, len(piece)) for blob, piece in zip(blobs, pieces, strict=True)]
            decode_s = time.process_time() - started
            exact = all(
                np.array_equal(d.view(np.uint64), p.view(np.uint64)) for d, p in zip(decoded, pieces, strict=True)
            )
            rows.append(
                {
                    "column": label,
                    "codec": codec,
                    "bytes_per_value": sum(map(len, blobs)) / len(sample),
                    "encode_mvalues_s": len(sample) / encode_s / 1e6,
                    "decode_mvalues_s": len(sample) / decode_s / 1e6,
                    "exact": exact,
                }
            )
    return rows


# -- 2. committed throughput ---------------------------------------------------------


def bench_writes(directory: Path, repeat: int, scale: int) -> dict[str, Any]:
    workloads = {1: 500_000 // scale, 4: 500_000 // scale, 100: 20_000 // scale}
    results: dict[str, Any] = {}
    empty = {False: empty_bytes(directory, chunks=False), True: empty_bytes(directory, chunks=True)}
    for scalars, calls in workloads.items():
        batches_ = list(batches("run", scalars, calls))
        values = calls * scalars
        times: dict[bool, list[float]] = {False: [], True: []}
        cpu_rates: dict[bool, list[float]] = {False: [], True: []}
        sizes: dict[bool, int] = {}
        for rep in range(repeat):
            order = (False, True) if rep % 2 == 0 else (True, False)  # ABBA against drift
            for chunks in order:
                elapsed, cpu, size = time_write(directory, f"write-{scalars}-{chunks}", batches_, chunks=chunks)
                times[chunks].append(values / elapsed)
                cpu_rates[chunks].append(values / cpu)
                sizes[chunks] = size - empty[chunks]
        del batches_
        gc.collect()
        chunk_rate = summary(times[True])
        base_rate = summary(times[False])
        results[str(scalars)] = {
            "calls": calls,
            "values": values,
            "chunks_values_per_s": chunk_rate,
            "baseline_values_per_s": base_rate,
            "ratio": chunk_rate["median"] / base_rate["median"],
            "ratios": [c / b for c, b in zip(times[True], times[False], strict=True)],
            "chunks_values_per_cpu_s": summary(cpu_rates[True]),
            "baseline_values_per_cpu_s": summary(cpu_rates[False]),
            "chunks_bytes_per_value": sizes[True] / values,
            "baseline_bytes_per_value": sizes[False] / values,
        }
    return results


# -- 3. open-chunk persistence ---------------------------------------------------------


def bench_persistence(directory: Path, scale: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    policies: dict[str, dict[str, Any]] = {
        "rewrite open chunk (1 row)": {"max_open_segments": 1},
        "segments, merged after 8": {"max_open_segments": 8, "tiered_segments": False},
        "segments until sealing": {"max_open_segments": 1_000_000, "tiered_segments": False},
        "size-tiered segments (chosen)": {},
    }
    for scalars, calls in ((4, 20_000 // scale), (100, 4_000 // scale)):
        for per_commit in (10, 100, 1000):
            commit_batches = list(batches("run", scalars, calls, per_commit))
            for label, options in policies.items():
                path = directory / "persist.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
                connection = new_store(path, ["run"], chunks=True)
                store = SQLiteSeriesStore(connection, SeriesBuilder(**options))
                started = time.process_time()
                for batch in commit_batches:
                    store.write_batch(batch)
                cpu = time.process_time() - started
                stats = store.builder.statistics()
                rows_left = connection.execute("SELECT count(*) FROM metric_chunks").fetchone()[0]
                connection.close()
                rows.append(
                    {
                        "scalars": scalars,
                        "calls_per_commit": per_commit,
                        "policy": label,
                        "cpu_us_per_value": cpu / (calls * scalars) * 1e6,
                        "encoded_per_new_point": stats.encoded_points / stats.new_points,
                        "rows_after": rows_left,
                    }
                )
    return rows


# -- 4. reads ----------------------------------------------------------------------------


def build_read_stores(directory: Path, scale: int) -> dict[str, Any]:
    """One chunk store with runs of 1M, 5M and 10M calls (4 scalars each) and a 1M-call store of the row layout."""
    sizes = {"r1m": 1_000_000 // scale, "r5m": 5_000_000 // scale, "r10m": 10_000_000 // scale}
    connection = new_store(directory / "reads.db", list(sizes), chunks=True)
    store = SQLiteSeriesStore(connection)
    started = time.perf_counter()
    for run_id, calls in sizes.items():
        for batch in batches(run_id, 4, calls, 50_000):
            store.write_batch(batch)
    build_s = time.perf_counter() - started
    connection.close()
    old = new_store(directory / "old.db", ["r1m"], chunks=False)
    writer = BaselineWriter(old)
    for batch in batches("r1m", 4, sizes["r1m"], 50_000):
        writer.write(batch)
    old.close()
    # The floor: the same three columns of the 1M run as .npy files.
    reader = sqlite3.connect(directory / "reads.db")
    points = read_series(reader, "r1m", ["loss"])["loss"].points
    reader.close()
    np.save(directory / "loss.npy", points.values)
    np.save(directory / "step.npy", points.step)
    np.save(directory / "time.npy", points.time_us)
    return {"calls": sizes, "build_s": build_s}


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()`` (CPU time shows the work when other processes share the cores)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - started, time.process_time() - cpu_started


def reader(path: Path | str) -> sqlite3.Connection:
    """A read connection as the store will open them: blobs read through mmap, not read() and a copy."""
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")
    return connection


def raw_row_read(path: Path | str, run_id: str) -> np.ndarray:
    """The first metric of a run read raw from the row layout: every call's row fetched, its JSON array parsed
    (NaN travels as null and ±Inf as "inf"/"-inf" there: this workload has neither)."""
    connection = reader(path)
    rows = connection.execute(
        "SELECT m.step, m.ts, m.vals FROM metric_rows m JOIN runs r ON r.id = m.run WHERE r.run_id = ? ORDER BY m.row",
        (run_id,),
    ).fetchall()
    connection.close()
    values = orjson.loads("[" + ",".join(row[2] for row in rows) + "]")
    return np.array([v[0] for v in values], dtype=np.float64)


def bench_reads(directory: Path, repeat: int) -> dict[str, Any]:
    def chunk_read(run_id: str) -> None:
        connection = reader(directory / "reads.db")
        series = read_series(connection, run_id, ["loss"], columns=("step", "time", "value"))
        frame = series_frame(series["loss"])
        assert len(frame) > 0
        connection.close()

    def old_read() -> None:
        assert len(raw_row_read(directory / "old.db", "r1m")) > 0

    def numpy_read() -> None:
        arrays = [np.load(directory / f"{name}.npy") for name in ("loss", "step", "time")]
        assert len(arrays[0]) > 0

    chunk_read("r1m")  # pandas' first use of a time zone costs ~0.3 s once per process: not a read's cost
    samples: dict[str, list[tuple[float, float]]] = {"chunks_1m": [], "chunks_5m": [], "today_1m": [], "numpy_1m": []}
    for rep in range(max(repeat, 9)):  # reads are short: more of them steady the medians on shared cores
        gc.collect()
        samples["chunks_1m"].append(timed(lambda: chunk_read("r1m")))
        samples["numpy_1m"].append(timed(numpy_read))
        samples["chunks_5m"].append(timed(lambda: chunk_read("r5m")))
        if rep < 3:  # a second or more each: three are enough
            samples["today_1m"].append(timed(old_read))
    return {
        key: {"wall": summary([w for w, _ in value]), "cpu": summary([c for _, c in value])}
        for key, value in samples.items()
    }


# -- 5. charts from a fresh process ------------------------------------------------------

CHART_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    import sqlite3
    from runwatch.store.chart import chart
    imported, cpu = time.perf_counter(), time.process_time()
    connection = sqlite3.connect(sys.argv[1])
    connection.execute("PRAGMA mmap_size = 1073741824")
    result = chart(connection, [sys.argv[2]], ["loss"], x=sys.argv[3], buckets=1000)
    done, cpu_done = time.perf_counter(), time.process_time()
    series = result[(sys.argv[2], "loss")]
    assert int(series.count.sum()) > 0
    print(json.dumps({"import_s": imported - started, "chart_s": done - imported, "chart_cpu_s": cpu_done - cpu,
                      "decoded_points": series.decoded_points, "points": int(series.count.sum())}))
    """
)

TODAY_CHART_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    sys.path.insert(0, sys.argv[3])
    import bench_store as bench
    from runwatch.web.series import downsample_min_max
    imported, cpu = time.perf_counter(), time.process_time()
    values = bench.raw_row_read(sys.argv[1], sys.argv[2])
    keep = downsample_min_max(values, 2000)
    done, cpu_done = time.perf_counter(), time.process_time()
    assert len(keep) > 0
    print(json.dumps({"import_s": imported - started, "chart_s": done - imported, "chart_cpu_s": cpu_done - cpu,
                      "points": len(values)}))
    """
)


def run_script(script: str, *args: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-c", script, *args], check=True, capture_output=True, text=True, timeout=300
    ).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def bench_charts(directory: Path, repeat: int) -> dict[str, Any]:
    reads = str(directory / "reads.db")
    samples: dict[str, list[dict[str, Any]]] = {
        "chunks_1m_step": [],
        "chunks_10m_step": [],
        "chunks_10m_time": [],
        "today_1m": [],
    }
    for rep in range(max(repeat, 7)):
        samples["chunks_1m_step"].append(run_script(CHART_SCRIPT, reads, "r1m", "step"))
        samples["chunks_10m_step"].append(run_script(CHART_SCRIPT, reads, "r10m", "step"))
        samples["chunks_10m_time"].append(run_script(CHART_SCRIPT, reads, "r10m", "time"))
        if rep < 3:
            here = str(Path(__file__).parent)
            samples["today_1m"].append(run_script(TODAY_CHART_SCRIPT, str(directory / "old.db"), "r1m", here))
    return {
        key: {
            "chart_s": summary([s["chart_s"] for s in value]),
            "chart_cpu_s": summary([s["chart_cpu_s"] for s in value]),
            "import_s": summary([s["import_s"] for s in value]),
            "decoded_points": max(s.get("decoded_points", 0) for s in value),
            "points": value[0]["points"],
        }
        for key, value in samples.items()
    }


# -- 6. migration ------------------------------------------------------------------------


def bench_migration(directory: Path, repeat: int) -> dict[str, Any]:
    rates: list[float] = []
    cpu_rates: list[float] = []
    report = None
    for _ in range(min(repeat, 3)):
        copy = directory / "migrate.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(copy) + suffix).unlink(missing_ok=True)
        shutil.copy(directory / "old.db", copy)
        connection = sqlite3.connect(copy, isolation_level=None)
        calls = connection.execute("SELECT count(*) FROM metric_rows").fetchone()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        assert migrate(connection) == [CHUNK_VERSION]
        cpu_rates.append(calls / (time.process_time() - cpu_started))
        rates.append(calls / (time.perf_counter() - started))
        connection.close()
        report = calls
    assert report is not None
    return {
        "calls": report,
        "values": report * 4,
        "calls_per_s": summary(rates),
        "calls_per_cpu_s": summary(cpu_rates),
        "values_per_call": 4,
    }


# -- 7. peak RSS ---------------------------------------------------------------------------

RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[3])

    def peak_mib():
        # VmHWM: this process image's own peak (ru_maxrss would carry the forking parent's over exec)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import bench_store as bench
    from pathlib import Path
    path = Path(sys.argv[1])
    chunks = sys.argv[2] == "chunks"
    connection = bench.new_store(path, ["run"], chunks=chunks)
    if chunks:
        writer = bench.SQLiteSeriesStore(connection)
        write = writer.write_batch
    else:
        write = bench.BaselineWriter(connection).write
    before = peak_mib()
    for batch in bench.batches("run", 4, int(sys.argv[4])):
        write(batch)
    print(json.dumps({"before_mib": before, "peak_mib": peak_mib()}))
    """
)


def bench_rss(directory: Path, scale: int) -> dict[str, Any]:
    calls = str(500_000 // scale)
    here = str(Path(__file__).parent)
    out = {}
    for kind in ("chunks", "baseline"):
        path = directory / f"rss-{kind}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        out[kind] = run_script(RSS_SCRIPT, str(path), kind, here, calls)
    return out


# -- report --------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    print(f"runwatch chunk store benchmark — {results['date']}, {results['machine']}, SQLite {results['sqlite']}")
    load = ", ".join(f"{value:.1f}" for value in results["load_average_at_start"])
    print(f"load average at start: {load} (other processes share these cores)")
    print("\n1. Codecs (16,384-point chunks; bytes/value, Mvalues/s encode / decode)")
    for row in results["codecs"]:
        flag = "" if row["exact"] else "  NOT EXACT"
        print(
            f"  {row['column']:<30} {row['codec']:<58} {row['bytes_per_value']:6.2f}"
            f"  {row['encode_mvalues_s']:7.1f} / {row['decode_mvalues_s']:7.1f}{flag}"
        )
    print(
        "\n2. Committed values/s: wall median [min–max] of interleaved runs (per CPU second), bytes per value on disk"
    )
    for scalars, row in results["writes"].items():
        c, b = row["chunks_values_per_s"], row["baseline_values_per_s"]
        cc, bc = row["chunks_values_per_cpu_s"]["median"], row["baseline_values_per_cpu_s"]["median"]
        print(
            f"  {scalars:>3} scalars/call  chunks {c['median'] / 1e6:5.2f}M [{c['min'] / 1e6:.2f}–{c['max'] / 1e6:.2f}]"
            f" ({cc / 1e6:.2f}M/CPU s)"
            f"  raw sqlite3, row layout   {b['median'] / 1e6:5.2f}M [{b['min'] / 1e6:.2f}–{b['max'] / 1e6:.2f}]"
            f" ({bc / 1e6:.2f}M/CPU s)"
            f"  ratio {row['ratio']:.2f} [{min(row['ratios']):.2f}–{max(row['ratios']):.2f}]"
            f"  bytes/value {row['chunks_bytes_per_value']:.2f} vs {row['baseline_bytes_per_value']:.2f}"
        )
    print("\n3. Open-chunk persistence (CPU µs per committed value; points encoded per new point; rows left)")
    for row in results["persistence"]:
        print(
            f"  {row['scalars']:>3} scalars, {row['calls_per_commit']:>5} calls/commit  {row['policy']:<30}"
            f" {row['cpu_us_per_value']:6.3f} µs  x{row['encoded_per_new_point']:.2f}  {row['rows_after']:>5} rows"
        )
    r = results["reads"]
    print("\n4. One metric into a DataFrame (wall median [min–max], CPU median; ms)")
    for key, label in (
        ("chunks_1m", "chunks, 1M calls"),
        ("chunks_5m", "chunks, 5M calls"),
        ("today_1m", "raw read of the row layout, 1M calls"),
        ("numpy_1m", "numpy.load of the same 3 columns, 1M"),
    ):
        s, c = r[key]["wall"], r[key]["cpu"]
        print(
            f"  {label:<40} {s['median'] * 1e3:8.1f} [{s['min'] * 1e3:.1f}–{s['max'] * 1e3:.1f}]"
            f"  CPU {c['median'] * 1e3:.1f}"
        )
    print("\n5. 2,000-point min/max chart (1,000 buckets) in a fresh process (ms after imports: wall, CPU)")
    for key, s in results["charts"].items():
        t = s["chart_s"]
        print(
            f"  {key:<18} {t['median'] * 1e3:8.1f} [{t['min'] * 1e3:.1f}–{t['max'] * 1e3:.1f}]"
            f"  CPU {s['chart_cpu_s']['median'] * 1e3:.1f}"
            f"  imports {s['import_s']['median'] * 1e3:.0f} ms  points {s['points']:,}"
            f"  decoded {s['decoded_points']:,}"
        )
    m = results["migration"]
    print(
        f"\n6. Migration of the row layout (schema 9 → 10): {m['calls_per_s']['median']:,.0f} calls/s"
        f" ({m['calls_per_s']['median'] * m['values_per_call']:,.0f} values/s;"
        f" {m['calls_per_cpu_s']['median']:,.0f} calls per CPU second) over {m['calls']:,} calls"
    )
    rss = results["rss"]
    print(
        f"\n7. Peak RSS writing {results['rss_values']:,} values: chunks {rss['chunks']['peak_mib']:.0f} MiB,"
        f" raw sqlite3 row layout {rss['baseline']['peak_mib']:.0f} MiB"
        f" (after imports and set-up: {rss['chunks']['before_mib']:.0f} / {rss['baseline']['before_mib']:.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/10 of the counts (a smoke run)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved repetitions (default 5)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-store-") as tmp:
        directory = Path(tmp)
        results["codecs"] = bench_codecs(1_000_000 // scale)
        results["writes"] = bench_writes(directory, args.repeat, scale)
        results["persistence"] = bench_persistence(directory, scale)
        results["read_stores"] = build_read_stores(directory, scale)
        results["reads"] = bench_reads(directory, args.repeat)
        results["charts"] = bench_charts(directory, args.repeat)
        results["migration"] = bench_migration(directory, args.repeat)
        results["rss"] = bench_rss(directory, scale)
        results["rss_values"] = 4 * 500_000 // scale
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "store.json").write_text(json.dumps(results, indent=2))
    print_report(results)


if __name__ == "__main__":
    main()
