"""runwatch beside the tools users pick today: the same training loop, each tool in its own process.

    python benchmarks/bench_peers.py [--quick] [--repeats N] [--steps N] [--mlflow-steps N] [--only a,b]

The workload: a loop of N steps logging 4 scalars per step (loss, accuracy,
reward, lr), then the tool's own "make it durable" call (flush / finish /
close), then its close. Each (tool, repeat) is a fresh subprocess of this
script with a fresh temporary directory (also its HOME and every cache and
config directory the tools know of), started with the interpreter running
this script: peers that are not importable there are skipped with a note.
Install them with ``pip install -e ".[bench]"`` into a separate virtualenv.

Tools: a no-op loop (the floor), raw ``sqlite3.executemany`` into a simple
table in 10,000-row committed transactions (the ceiling), runwatch
(``WebMonitor.update_metrics``), tensorboardX (``add_scalar`` x4 per step),
Trackio (``trackio.log``), Aim (``Run.track`` with the 4-value dict), W&B in
offline mode (``run.log``), and MLflow with a ``sqlite:///`` tracking URI
(``mlflow.log_metrics`` once per step, its default synchronous mode; it is
slow, so it runs fewer steps and every figure is per step or per second).

Per tool (median over the repeats):

- producer cost: median and p99 of the time spent in the logging call(s) of
  one step (the dict is built outside the timed region);
- committed values/s: 4N / (time from the first logging call until the
  durable call returns);
- durable after last step: how long that call takes;
- peak RSS: the child process plus every process it spawned, summed, sampled
  every 50 ms from this (parent) process over the child's whole life,
  imports included;
- verified: a separate process reads the values back (row / event / record
  counts and the sum of ``reward``) after the child has been SIGKILLed, with
  its helper processes, right after its close returned: what is not on disk
  by then does not count.

A crash check (once per tool) runs the loop paced at 1,000 steps/s (a fast
training loop) for 3,000 steps, SIGKILLs the child and its helpers right
after the last logging call, with no flush or close, and counts what
survived: the values lost, and how many seconds of logging they were.

Where ``unshare -n`` works (root on Linux) every child runs in a fresh
network namespace with only loopback up, so no tool can reach the network;
otherwise the tools' offline and no-telemetry settings are all there is.

Results print as a Markdown table and go to ``benchmarks/results/peers.json``
(``peers-quick.json`` with ``--quick``). Every loop is bounded in count and
every child in time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
NAMES = ("loss", "accuracy", "reward", "lr")
CONFIG = {"lr": 3e-4, "batch_size": 64, "bench": "peers"}
SAMPLE_INTERVAL_S = 0.05

Log = Callable[[dict[str, float], int], None]
Hook = Callable[[], None]


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    module: str | None  # what must be importable
    dist: str | None  # the distribution whose version is reported
    peer: bool  # counts for the targets
    usage: str


TOOLS = (
    Tool("noop", "no-op loop", None, None, False, "a Python function that ignores its arguments"),
    Tool(
        "raw_sqlite",
        "raw sqlite3",
        "sqlite3",
        None,
        False,
        "rows appended to a list; executemany + COMMIT every 10,000 rows (WAL, synchronous=NORMAL)",
    ),
    Tool("runwatch", "runwatch", "runwatch", "runwatch", False, "WebMonitor.update_metrics(dict); flush(); close()"),
    Tool(
        "tensorboardX",
        "tensorboardX",
        "tensorboardX",
        "tensorboardX",
        True,
        "SummaryWriter.add_scalar x4 per step; flush(); close()",
    ),
    Tool("trackio", "Trackio", "trackio", "trackio", True, "trackio.log(dict, step); trackio.finish()"),
    Tool("aim", "Aim", "aim", "aim", True, "Run.track(dict, step); Run.close()"),
    Tool("wandb", "W&B offline", "wandb", "wandb", True, "WANDB_MODE=offline; run.log(dict, step); run.finish()"),
    Tool(
        "mlflow",
        "MLflow sqlite",
        "mlflow",
        "mlflow",
        True,
        "sqlite:/// tracking URI; mlflow.log_metrics(dict, step) per step (synchronous, the default); end_run()",
    ),
)
BY_KEY = {tool.key: tool for tool in TOOLS}


# -- the child: one tool, one run ----------------------------------------------------------


def open_noop(data: Path) -> tuple[Log, Hook, Hook]:
    def log(values: dict[str, float], step: int) -> None:
        return None

    return log, lambda: None, lambda: None


def open_raw_sqlite(data: Path) -> tuple[Log, Hook, Hook]:
    connection = sqlite3.connect(data / "raw.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("CREATE TABLE metrics (step INTEGER, ts REAL, name TEXT, value REAL)")
    rows: list[tuple[int, float, str, float]] = []
    now = time.time

    def write() -> None:
        if rows:
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?)", rows)
            connection.execute("COMMIT")
            rows.clear()

    def log(values: dict[str, float], step: int) -> None:
        ts = now()
        rows.extend((step, ts, name, value) for name, value in values.items())
        if len(rows) >= 10_000:
            write()

    return log, write, connection.close


def open_runwatch(data: Path) -> tuple[Log, Hook, Hook]:
    from runwatch import MonitorConfig, WebMonitor

    config = MonitorConfig(db_path=str(data / "runwatch.db"), data_dir=str(data / "runwatch"), web_port=0)
    monitor = WebMonitor(config)
    monitor.start_training(dict(CONFIG))
    update = monitor.update_metrics

    def log(values: dict[str, float], step: int) -> None:
        update(values)

    def durable() -> None:
        if not monitor.flush(timeout=300):
            raise RuntimeError("runwatch flush() timed out")

    def close() -> None:
        monitor.stop_training()
        monitor.close()

    return log, durable, close


def open_tensorboardx(data: Path) -> tuple[Log, Hook, Hook]:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir=str(data / "tb"))
    add = writer.add_scalar

    def log(values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            add(name, value, step)

    return log, writer.flush, writer.close


def open_trackio(data: Path) -> tuple[Log, Hook, Hook]:
    import trackio

    trackio.init(project="bench", config=dict(CONFIG))
    send = trackio.log

    def log(values: dict[str, float], step: int) -> None:
        send(values, step=step)

    return log, trackio.finish, lambda: None  # no flush API: finish() is the durable point


def open_aim(data: Path) -> tuple[Log, Hook, Hook]:
    from aim import Run

    run = Run(repo=str(data / "aim"), experiment="bench")
    run["hparams"] = dict(CONFIG)
    track = run.track

    def log(values: dict[str, float], step: int) -> None:
        track(values, step=step)

    return log, run.close, lambda: None  # no flush API: close() is the durable point


def open_wandb(data: Path) -> tuple[Log, Hook, Hook]:
    import wandb

    run = wandb.init(project="bench", config=dict(CONFIG), mode="offline", dir=str(data))
    send = run.log

    def log(values: dict[str, float], step: int) -> None:
        send(values, step=step)

    return log, run.finish, lambda: None  # no flush API: finish() is the durable point


def open_mlflow(data: Path) -> tuple[Log, Hook, Hook]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{data / 'mlflow.db'}")
    mlflow.start_run()
    mlflow.log_params(CONFIG)
    send = mlflow.log_metrics

    def log(values: dict[str, float], step: int) -> None:
        send(values, step=step)

    # every log_metrics call is its own committed transaction: durable when it returns
    return log, lambda: None, mlflow.end_run


OPENERS: dict[str, Callable[[Path], tuple[Log, Hook, Hook]]] = {
    "noop": open_noop,
    "raw_sqlite": open_raw_sqlite,
    "runwatch": open_runwatch,
    "tensorboardX": open_tensorboardx,
    "trackio": open_trackio,
    "aim": open_aim,
    "wandb": open_wandb,
    "mlflow": open_mlflow,
}


def percentile_us(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000.0


def crash_now() -> None:
    """SIGKILL this process and everything it spawned in its process group: no flush, no atexit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(1)  # only if the signal could not be sent


def crash_child(log: Log, steps: int, rate: float, result_path: Path) -> None:
    """Log at ``rate`` steps/s, note how long that took, then die without flushing or closing."""
    interval = 1.0 / rate
    clock = time.perf_counter
    first = due = clock()
    for i in range(steps):
        log({"loss": 1.0 / (i + 1), "accuracy": 0.9, "reward": float(i), "lr": 3e-4}, i)
        due += interval
        delay = due - clock()
        if delay > 0:
            time.sleep(delay)
    elapsed = clock() - first
    result_path.write_text(json.dumps({"steps": steps, "elapsed_s": elapsed}))
    crash_now()


def child(tool: str, data: Path, steps: int, mode: str, result_path: Path, rate: float) -> None:
    import resource

    started = time.perf_counter()
    log, durable, close = OPENERS[tool](data)
    ready = time.perf_counter()
    if mode == "crash":
        crash_child(log, steps, rate, result_path)
    clock = time.perf_counter_ns
    timings = [0] * steps
    first = clock()
    for i in range(steps):
        values = {"loss": 1.0 / (i + 1), "accuracy": 0.9, "reward": float(i), "lr": 3e-4}
        t0 = clock()
        log(values, i)
        timings[i] = clock() - t0
    last = clock()
    durable()
    durable_at = clock()
    close()
    closed_at = clock()
    timings.sort()
    result = {
        "steps": steps,
        "values": steps * len(NAMES),
        "startup_s": ready - started,
        "producer_median_us": percentile_us(timings, 0.5),
        "producer_p99_us": percentile_us(timings, 0.99),
        "producer_max_us": timings[-1] / 1000.0,
        "loop_us_per_step": (last - first) / steps / 1000.0,
        "values_per_s": steps * len(NAMES) / ((durable_at - first) / 1e9),
        "values_per_s_to_close": steps * len(NAMES) / ((closed_at - first) / 1e9),
        "durable_after_last_s": (durable_at - last) / 1e9,
        "close_after_last_s": (closed_at - last) / 1e9,
        "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    result_path.write_text(json.dumps(result))
    # What the tool has not put on disk by the time its close returned does not count.
    crash_now()


# -- read-back: a separate process, after the child and its helpers are gone ----------------


def verify_sqlite(path: Path, count_sql: str, reward_sql: str) -> tuple[int, float]:
    if not path.exists():
        return 0, 0.0  # nothing was ever written
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        count = connection.execute(count_sql).fetchone()[0] or 0
        reward = connection.execute(reward_sql).fetchone()[0] or 0.0
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        return 0, 0.0  # created on the first write, which never happened
    finally:
        connection.close()
    return int(count), float(reward)


def verify_raw_sqlite(data: Path) -> tuple[int, float]:
    return verify_sqlite(
        data / "raw.db", "SELECT count(*) FROM metrics", "SELECT sum(value) FROM metrics WHERE name = 'reward'"
    )


def verify_runwatch(data: Path) -> tuple[int, float]:
    from runwatch import DatabaseManager

    count, reward = 0, 0.0
    if not (data / "runwatch.db").exists():
        return count, reward
    with DatabaseManager(data / "runwatch.db") as db:
        for run in db.get_training_runs():
            frame = db.get_run_metrics(run["run_id"], list(NAMES))
            count += int(frame.reindex(columns=list(NAMES)).notna().sum().sum())
            if "reward" in frame:
                reward += float(frame["reward"].sum())
    return count, reward


def verify_tensorboardx(data: Path) -> tuple[int, float]:
    from tensorboardX.proto import event_pb2

    count, reward = 0, 0.0
    for path in sorted((data / "tb").glob("events.out.tfevents.*")):
        buffer = path.read_bytes()
        position = 0
        while position + 12 <= len(buffer):  # TFRecord: u64 length, u32 crc, data, u32 crc
            (length,) = struct.unpack_from("<Q", buffer, position)
            if position + 12 + length + 4 > len(buffer):
                break  # a torn last record
            event = event_pb2.Event()
            event.ParseFromString(buffer[position + 12 : position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                if value.tag in NAMES:
                    count += 1
                    if value.tag == "reward":
                        reward += value.simple_value
    return count, reward


def verify_trackio(data: Path) -> tuple[int, float]:
    count, reward = 0, 0.0
    for path in (data / "trackio").glob("*.db"):
        columns = " + ".join(f"count(json_extract(metrics, '$.{name}'))" for name in NAMES)
        c, r = verify_sqlite(
            path, f"SELECT {columns} FROM metrics", "SELECT sum(json_extract(metrics, '$.reward')) FROM metrics"
        )
        count, reward = count + c, reward + r
    return count, reward


def verify_aim(data: Path) -> tuple[int, float]:
    from aim import Repo, Run
    from aim.sdk.index_manager import RepoIndexManager

    path = str(data / "aim")
    repo = Repo(path)
    indexer = RepoIndexManager(repo)  # what `aim up` does before a run is readable; not started
    hashes = repo.list_all_runs()
    for run_hash in hashes:
        indexer.index(run_hash)
    repo = Repo(path)
    count, reward = 0, 0.0
    for run_hash in hashes:
        run = Run(run_hash, repo=repo, read_only=True)
        for metric in run.metrics():
            if metric.name in NAMES:
                values = metric.values.values_list()
                count += len(values)
                if metric.name == "reward":
                    reward += float(sum(values))
    return count, reward


def iter_wandb_records(buffer: bytes) -> Any:
    """The records of a .wandb file: a 7-byte header, then LevelDB-log framing in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    block = 32768
    position = 7
    pieces: list[bytes] = []
    while position + 7 <= len(buffer):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", buffer, position)
        if kind == 0 and length == 0:  # block padding
            position += left
            continue
        if position + 7 + length > len(buffer):
            break  # a torn last record
        pieces.append(buffer[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record


def verify_wandb(data: Path) -> tuple[int, float]:
    count, reward = 0, 0.0
    for run_dir in sorted((data / "wandb").iterdir()):
        if run_dir.is_symlink() or not run_dir.is_dir():
            continue  # latest-run is a link to a run directory
        for path in run_dir.glob("*.wandb"):
            count, reward = count_wandb_file(path, count, reward)
    return count, reward


def count_wandb_file(path: Path, count: int, reward: float) -> tuple[int, float]:
    for record in iter_wandb_records(path.read_bytes()):
        if record.WhichOneof("record_type") != "history":
            continue
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            if key in NAMES:
                count += 1
                if key == "reward":
                    reward += float(json.loads(item.value_json))
    return count, reward


def verify_mlflow(data: Path) -> tuple[int, float]:
    names = ", ".join(f"'{name}'" for name in NAMES)
    return verify_sqlite(
        data / "mlflow.db",
        f"SELECT count(*) FROM metrics WHERE key IN ({names})",
        "SELECT sum(value) FROM metrics WHERE key = 'reward'",
    )


VERIFIERS: dict[str, Callable[[Path], tuple[int, float]]] = {
    "raw_sqlite": verify_raw_sqlite,
    "runwatch": verify_runwatch,
    "tensorboardX": verify_tensorboardx,
    "trackio": verify_trackio,
    "aim": verify_aim,
    "wandb": verify_wandb,
    "mlflow": verify_mlflow,
}


def verify_child(tool: str, data: Path, result_path: Path) -> None:
    count, reward = VERIFIERS[tool](data)
    result_path.write_text(json.dumps({"values": count, "reward_sum": reward}))


# -- the parent: run children, sample their memory, verify, report ---------------------------


class TreeSampler(threading.Thread):
    """Peak RSS of a process plus all its descendants, summed, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.peak = 0
        self.max_helpers = 0
        self.seen: dict[tuple[int, float], str] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        psutil = self._psutil
        try:
            if not self.root.name().startswith("python"):
                return  # still the network-namespace wrapper (unshare, sh, ip), not yet the child
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        alive = 0
        for process in processes:
            try:
                total += process.memory_info().rss
                key = (process.pid, process.create_time())
                if process.pid != self.root.pid and key not in self.seen:
                    self.seen[key] = process.name()
                alive += 1
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)
        self.max_helpers = max(self.max_helpers, alive - 1)

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def kill_leftovers(self) -> list[str]:
        """SIGKILL the helper processes this child started that outlived it (by pid and start time)."""
        psutil = self._psutil
        killed = []
        for (pid, created), name in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created:
                    process.kill()
                    killed.append(name)
            except psutil.Error:
                continue
        return killed


def netns_prefix(mode: str) -> tuple[list[str], str]:
    """The command prefix that runs a child in a network namespace with only loopback, if possible."""
    prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    if mode == "off":
        return [], "none (--netns off): tools ran with their offline / no-telemetry settings only"
    usable = bool(shutil.which("unshare") and shutil.which("ip"))
    if usable:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
        usable = probe.returncode == 0
    if usable:
        return prefix, "each child in its own network namespace with only loopback up (unshare -n)"
    if mode == "on":
        raise SystemExit("--netns on: `unshare -n` with `ip link set lo up` does not work here")
    return [], "none (unshare -n unavailable): tools ran with their offline / no-telemetry settings only"


def child_env(root: Path, data: Path) -> dict[str, str]:
    home = root / "home"
    for sub in ("", ".cache", ".config", ".local/share"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        PYTHONUNBUFFERED="1",
        DO_NOT_TRACK="1",
        # W&B: offline, nothing leaves the machine, every file under the temp dir
        WANDB_MODE="offline",
        WANDB_DIR=str(data),
        WANDB_CACHE_DIR=str(home / ".cache/wandb"),
        WANDB_CONFIG_DIR=str(home / ".config/wandb"),
        WANDB_DATA_DIR=str(home / ".local/share/wandb"),
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
        WANDB_DISABLE_GIT="true",
        WANDB_DISABLE_CODE="true",
        # Trackio / Hugging Face: local only
        TRACKIO_DIR=str(data / "trackio"),
        HF_HOME=str(home / ".cache/huggingface"),
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        GRADIO_ANALYTICS_ENABLED="False",
        # MLflow: no tracking server from the environment, no telemetry
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    for name in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL"):
        env.pop(name, None)
    return env


def disk_mib(path: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total / 2**20


def tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_once(
    tool: str, steps: int, mode: str, prefix: list[str], limit_s: float, rate: float = 1000.0
) -> dict[str, Any]:
    """One child run of ``tool`` (``mode`` "measure" or "crash"), then its read-back."""
    script = str(Path(__file__).resolve())
    root = Path(tempfile.mkdtemp(prefix=f"runwatch-peers-{tool}-"))
    data = root / "data"
    data.mkdir()
    env = child_env(root, data)
    outcome: dict[str, Any] = {"steps": steps}
    try:
        result_path = root / "result.json"
        command = [*prefix, sys.executable, script, "--child", tool, "--dir", str(data), "--steps", str(steps)]
        command += ["--mode", mode, "--result", str(result_path), "--rate", str(rate)]
        with open(root / "stdout.txt", "wb") as out, open(root / "stderr.txt", "wb") as err:
            process = subprocess.Popen(command, cwd=data, env=env, stdout=out, stderr=err, start_new_session=True)
            sampler = TreeSampler(process.pid)
            sampler.start()
            try:
                process.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the session this child leads
                process.wait(timeout=60)
                outcome["error"] = f"timed out after {limit_s:.0f} s"
            finally:
                sampler.stop.set()
                sampler.join(timeout=5)
        leftovers = sampler.kill_leftovers()
        outcome["peak_rss_mib"] = sampler.peak / 2**20
        outcome["helper_processes"] = sorted(set(sampler.seen.values()))
        outcome["max_helpers_at_once"] = sampler.max_helpers
        if leftovers:
            outcome["helpers_killed_after_exit"] = leftovers
        if not result_path.exists():
            outcome.setdefault("error", f"no result (exit {process.returncode})")
            outcome["stderr"] = tail((root / "stderr.txt").read_text(errors="replace"))
            return outcome
        outcome.update(json.loads(result_path.read_text()))
        outcome["peak_rss_mib"] = max(outcome["peak_rss_mib"], outcome.get("self_maxrss_mib", 0.0))
        outcome["disk_mib"] = disk_mib(data)
        if tool in VERIFIERS:
            outcome["read_back"] = found = read_back(tool, steps, data, root, prefix, env)
            if mode == "crash" and "values" in found:
                lost = found["expected_values"] - found["values"]
                outcome["lost_values"] = lost
                outcome["lost_s"] = lost / found["expected_values"] * outcome["elapsed_s"]
        return outcome
    finally:
        shutil.rmtree(root, ignore_errors=True)


def read_back(tool: str, steps: int, data: Path, root: Path, prefix: list[str], env: dict[str, str]) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    result_path = root / "verify.json"
    command = [*prefix, sys.executable, script, "--verify", tool, "--dir", str(data), "--result", str(result_path)]
    try:
        done = subprocess.run(command, cwd=data, env=env, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "read-back timed out"}
    if not result_path.exists():
        return {"ok": False, "error": "read-back failed: " + tail(done.stderr.decode(errors="replace"), 4)}
    found = json.loads(result_path.read_text())
    expected_values = steps * len(NAMES)
    expected_reward = steps * (steps - 1) / 2
    found["expected_values"] = expected_values
    found["ok"] = found["values"] == expected_values and abs(found["reward_sum"] - expected_reward) < 0.5
    return found


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def version_of(tool: Tool) -> str | None:
    if tool.dist is None:
        return None
    try:
        return importlib.metadata.version(tool.dist)
    except importlib.metadata.PackageNotFoundError:
        return None


FIGURES = (
    "producer_median_us",
    "producer_p99_us",
    "loop_us_per_step",
    "values_per_s",
    "values_per_s_to_close",
    "durable_after_last_s",
    "close_after_last_s",
    "peak_rss_mib",
    "startup_s",
    "disk_mib",
)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [run for run in runs if "error" not in run]
    summary: dict[str, Any] = {"repeats": len(runs), "failed_repeats": len(runs) - len(good)}
    if not good:
        return summary
    for figure in FIGURES:
        values = [run[figure] for run in good if figure in run]
        if values:
            summary[figure] = statistics.median(values)
    summary["steps"] = good[0]["steps"]
    checks = [run["read_back"] for run in good if "read_back" in run]
    if checks:
        summary["verified"] = all(check["ok"] for check in checks)
        summary["values_read_back"] = [check.get("values") for check in checks]
    summary["helper_processes"] = sorted({name for run in good for name in run.get("helper_processes", [])})
    return summary


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "—"
    r = a / b
    return f"{r:,.0f}×" if r >= 10 else f"{r:.2f}×"


def report(results: dict[str, Any]) -> list[str]:
    tools: dict[str, dict[str, Any]] = results["tools"]
    rw = tools.get("runwatch", {}).get("summary", {})
    m = results["machine"]
    lines = [
        f"runwatch vs peers — {results['date']}, {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"SQLite {m['sqlite']}; {results['repeats']} repeat(s), median shown",
        "",
        "| tool | steps | producer median µs/step | p99 µs/step | committed values/s | durable after last step s "
        "| peak RSS MiB (helpers) | read back | lost on kill -9 | producer ÷ runwatch | runwatch ÷ values/s "
        "| RSS ÷ runwatch |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for tool in TOOLS:
        entry = tools.get(tool.key)
        if entry is None:
            continue
        label = tool.label + (f" {entry['version']}" if entry.get("version") else "")
        if entry.get("skipped"):
            lines.append(f"| {label} | skipped: {entry['skipped']} |" + " |" * 10)
            continue
        s = entry["summary"]
        if "values_per_s" not in s:
            error = entry["runs"][0].get("error", "failed") if entry["runs"] else "failed"
            lines.append(f"| {label} | failed: {error} |" + " |" * 10)
            continue
        if tool.key == "noop":
            read = "n/a"
        elif s.get("verified"):
            read = "all"
        else:
            read = "**LOST** " + "/".join(str(v) for v in s.get("values_read_back", []))
        crash = entry.get("crash", {})
        kept = f"{crash['lost_values']:,} ≈ {crash['lost_s']:.2f} s" if "lost_s" in crash else "—"
        helpers = f" (+{', '.join(s['helper_processes'])})" if s.get("helper_processes") else ""
        stored = tool.key != "noop"  # the no-op stores nothing: its loop rate is no throughput
        cells = [
            label,
            f"{s['steps']:,}",
            fmt(s["producer_median_us"], 2),
            fmt(s["producer_p99_us"], 2),
            f"{s['values_per_s']:,.0f}" if stored else "—",
            f"{s['durable_after_last_s']:.3f}" if stored else "—",
            f"{s['peak_rss_mib']:.0f}{helpers}",
            read,
            kept,
            ratio(s["producer_median_us"], rw.get("producer_median_us")),
            ratio(rw.get("values_per_s"), s["values_per_s"]) if stored else "—",
            ratio(s["peak_rss_mib"], rw.get("peak_rss_mib")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    tools = results["tools"]
    rw = tools.get("runwatch", {}).get("summary", {})
    peers = {
        key: entry["summary"]
        for key, entry in tools.items()
        if BY_KEY[key].peer and "values_per_s" in entry.get("summary", {})
    }
    raw = tools.get("raw_sqlite", {}).get("summary", {})
    if "values_per_s" not in rw or not peers:
        return [{"target": "all targets", "met": None, "detail": "not checked: runwatch or every peer did not run"}]
    intact = bool(rw.get("verified"))
    note = "" if intact else " (runwatch did not store every value: missed)"
    out: list[dict[str, Any]] = []

    cost = rw["producer_median_us"]
    fastest = min(peers, key=lambda key: peers[key]["producer_median_us"])
    theirs = peers[fastest]["producer_median_us"]
    out.append(
        {
            "target": "producer cost ≤ 1/20 of the fastest peer's",
            "met": intact and cost <= theirs / 20,
            "detail": f"runwatch {cost:.2f} µs/step vs {fastest} {theirs:.2f} µs/step: {theirs / cost:.1f}× lower"
            f" (needs ≥ 20×, i.e. ≤ {theirs / 20:.2f} µs){note}",
        }
    )
    rate = rw["values_per_s"]
    fastest = max(peers, key=lambda key: peers[key]["values_per_s"])
    theirs = peers[fastest]["values_per_s"]
    out.append(
        {
            "target": "committed throughput ≥ 20× the fastest peer's",
            "met": intact and rate >= 20 * theirs,
            "detail": f"runwatch {rate:,.0f} values/s vs {fastest} {theirs:,.0f}: {rate / theirs:.1f}×"
            f" (needs ≥ 20×, i.e. ≥ {20 * theirs:,.0f}){note}",
        }
    )
    if "values_per_s" in raw:
        share = rate / raw["values_per_s"]
        out.append(
            {
                "target": "committed throughput ≥ 50% of raw sqlite3",
                "met": intact and share >= 0.5,
                "detail": f"runwatch {rate:,.0f} vs raw sqlite3 {raw['values_per_s']:,.0f} values/s:"
                f" {100 * share:.0f}%{note}",
            }
        )
    rss = rw["peak_rss_mib"]
    lightest = min(peers, key=lambda key: peers[key]["peak_rss_mib"])
    theirs = peers[lightest]["peak_rss_mib"]
    out.append(
        {
            "target": "peak RSS ≤ the lightest peer's",
            "met": rss <= theirs,
            "detail": f"runwatch {rss:.0f} MiB vs {lightest} {theirs:.0f} MiB",
        }
    )
    unverified = [key for key, summary in peers.items() if not summary.get("verified")]
    if unverified:
        detail = "peers that did not store every value (their figures still set the bars): " + ", ".join(unverified)
        out.append({"target": "note", "met": True, "detail": detail})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small step counts, one repeat")
    parser.add_argument("--repeats", type=int, help="runs per tool (default 3, 1 with --quick)")
    parser.add_argument("--steps", type=int, help="steps per run (default 40,000; 2,000 with --quick)")
    parser.add_argument("--mlflow-steps", type=int, help="steps per MLflow run (default 2,000; 200 with --quick)")
    parser.add_argument("--only", help="comma-separated tool keys: " + ",".join(BY_KEY))
    parser.add_argument("--no-crash-check", action="store_true", help="skip the kill -9 runs")
    parser.add_argument("--crash-steps", type=int, help="steps of the kill -9 run (default 3,000; 500 with --quick)")
    parser.add_argument("--rate", type=float, default=1000.0, help="steps/s of the kill -9 run (default 1,000)")
    parser.add_argument("--netns", choices=("auto", "on", "off"), default="auto", help="network isolation")
    parser.add_argument("--out", type=Path, help="the JSON file (default benchmarks/results/peers[-quick].json)")
    parser.add_argument("--child", choices=tuple(OPENERS), help=argparse.SUPPRESS)
    parser.add_argument("--verify", choices=tuple(VERIFIERS), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("measure", "crash"), default="measure", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.steps, args.mode, args.result, args.rate)
        return
    if args.verify:
        verify_child(args.verify, args.dir, args.result)
        return

    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.steps or (2_000 if args.quick else 40_000)
    mlflow_steps = args.mlflow_steps or (200 if args.quick else 2_000)
    crash_steps = args.crash_steps or (500 if args.quick else 3_000)
    limit_s = 120.0 if args.quick else 600.0
    wanted = [key.strip() for key in args.only.split(",")] if args.only else list(BY_KEY)
    for key in wanted:
        if key not in BY_KEY:
            raise SystemExit(f"unknown tool {key!r}; choose from {', '.join(BY_KEY)}")
    prefix, isolation = netns_prefix(args.netns)
    crash = None if args.no_crash_check else {"steps": crash_steps, "steps_per_s": args.rate}
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "interpreter": sys.executable,
        "network": isolation,
        "repeats": repeats,
        "quick": args.quick,
        "workload": "N steps x 4 scalars (loss, accuracy, reward, lr), one tool per fresh subprocess and temp dir",
        "crash_check": crash,
        "tools": {},
    }
    tools: dict[str, dict[str, Any]] = results["tools"]
    runnable = []
    for key in wanted:
        tool = BY_KEY[key]
        entry: dict[str, Any] = {"label": tool.label, "version": version_of(tool), "usage": tool.usage, "runs": []}
        if tool.module and importlib.util.find_spec(tool.module) is None:
            entry["skipped"] = f"not importable by {sys.executable} (pip install -e '.[bench]')"
        else:
            runnable.append(key)
        tools[key] = entry
    print(f"network isolation: {isolation}", file=sys.stderr)
    for repeat in range(repeats):
        for key in runnable:
            n = mlflow_steps if key == "mlflow" else steps
            print(f"[{repeat + 1}/{repeats}] {key}: {n:,} steps ...", file=sys.stderr, flush=True)
            outcome = run_once(key, n, "measure", prefix, limit_s)
            tools[key]["runs"].append(outcome)
            brief = outcome.get("error") or (
                f"{outcome['producer_median_us']:.2f} µs/step, {outcome['values_per_s']:,.0f} values/s, "
                f"{outcome['peak_rss_mib']:.0f} MiB, read back "
                f"{'ok' if outcome.get('read_back', {}).get('ok', key == 'noop') else outcome.get('read_back')}"
            )
            print(f"    {brief}", file=sys.stderr, flush=True)
    if not args.no_crash_check:
        for key in runnable:
            if key == "noop":
                continue
            print(f"[crash] {key}: {crash_steps:,} steps at {args.rate:,.0f}/s, then kill -9 ...", file=sys.stderr)
            outcome = run_once(key, crash_steps, "crash", prefix, limit_s, args.rate)
            tools[key]["crash"] = outcome
            brief = (
                outcome.get("error") or f"lost {outcome.get('lost_values')} values ≈ {outcome.get('lost_s', 0):.2f} s"
            )
            print(f"    {brief}", file=sys.stderr, flush=True)
    for key in runnable:
        tools[key]["summary"] = summarise(tools[key]["runs"])
    results["targets"] = targets(results)
    out = args.out or RESULTS / ("peers-quick.json" if args.quick else "peers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print("\n".join(report(results)))
    print()
    print("Targets (runwatch vs the peers that ran: " + ", ".join(k for k in runnable if BY_KEY[k].peer) + "):")
    for target in results["targets"]:
        if target["target"] == "note":
            print(f"- note: {target['detail']}")
        else:
            verdict = {True: "MET", False: "MISSED", None: "NOT CHECKED"}[target["met"]]
            print(f"- {verdict}: {target['target']} — {target['detail']}")
    for key, entry in tools.items():
        if entry.get("skipped"):
            print(f"- skipped {key}: {entry['skipped']}")
        for run in entry["runs"]:
            if "error" in run:
                print(f"- {key} failed: {run['error']}\n{run.get('stderr', '')}")
    if crash:
        print(
            f"- lost on kill -9: the loop logs {crash['steps']:,} steps at {crash['steps_per_s']:,.0f} steps/s,"
            " then the tool and its helpers are SIGKILLed with no flush or close; values missing on disk"
            " ≈ seconds of logging"
        )
    print(f"\nNetwork: {isolation}. Results: {out}")


if __name__ == "__main__":
    main()
