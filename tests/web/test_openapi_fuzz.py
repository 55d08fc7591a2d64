"""Property-based conformance of the REST API to its own /openapi.json, with schemathesis.

A monitor with one small training run and one session serves on a free
loopback port; schemathesis loads ``/openapi.json`` from it and, for every
documented operation, generates a bounded number of requests (valid and
invalid), sends them and runs all of its checks on each response: no 5xx,
status codes, content types and bodies as documented, invalid data rejected.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.web.app import create_app
from runwatch.wire.ingest import IMAGE_BODY_TYPE, IMAGE_INGEST_PATH

TIMEOUT = 10
MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """A monitor on a free loopback port that logged one run and one session."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    monitor = WebMonitor(MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0))
    try:
        monitor.start_training({"lr": 0.1}, run_id="fuzz-run")
        for step in range(20):
            monitor.update_metrics({"loss": 1 / (step + 1), "train": {"acc": step / 20}})
        monitor.record_event("checkpoint", {"n": 1})
        monitor.update_game_state({"score": 3})
        assert monitor.flush()
        assert monitor.web_url is not None
        with httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT) as client:
            created = client.post("/api/sessions", json={"product": "fuzz", "version": "1"})
            assert created.status_code == 200, created.text
        yield monitor
    finally:
        monitor.close()


def openapi_document() -> dict[str, Any]:
    """The app's /openapi.json, built without serving it (schemathesis needs it at collection)."""
    app = create_app(db_path="unused.db").app
    return app.openapi()


schema = schemathesis.openapi.from_dict(openapi_document())
# An image body is bytes: generated as such.
schemathesis.serializer.alias(IMAGE_BODY_TYPE, "application/octet-stream")

#: datacat's routes read bodies as Go does (keys in any case, unknown keys ignored, a create's type errors
#: ignored) and answer a wrong method on a session path 404 as datacat does: no JSON Schema says which
#: bodies those rules accept, so generated bodies are not judged valid or invalid by the schema there
#: (tests/datacat/ holds those routes to datacat's exchanges instead).
DATACAT_EXCLUDED_CHECKS = [
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.unsupported_method,
]


def test_served_schema_is_the_fuzzed_one(monitor: WebMonitor) -> None:
    """The document the server serves at /openapi.json is the one the fuzz test was generated from."""
    with httpx.Client(base_url=monitor.web_url or "", timeout=TIMEOUT) as client:
        assert client.get("/openapi.json").json() == openapi_document()


#: An image body is a line of JSON, then PNG/JPEG bytes whose SHA-256 that line names: no schema can say which
#: bytes are acceptable, so generated bodies are only held to the other checks (tests/remote/test_large_images.py
#: holds the route to real images and to bad ones).
IMAGE_EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance]


def fits_in_64_bits(value: Any) -> bool:
    """Whether every integer inside a JSON value fits in 64 bits."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, dict):
        return all(fits_in_64_bits(item) for item in value.values())
    if isinstance(value, list):
        return all(fits_in_64_bits(item) for item in value)
    return True


def filter_body(context: Any, body: Any) -> bool:
    """Leave out bodies with integers beyond 64 bits inside free-form payloads (an event's data, config,
    metadata, patch): JSON Schema cannot say that such integers must fit in 64 bits, and the server refuses them
    with 422, which tests/web/test_ingest.py covers."""
    return fits_in_64_bits(body)


@schema.hooks.apply(filter_body)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_api_conforms_to_its_openapi_schema(case: schemathesis.Case, monitor: WebMonitor) -> None:
    """Every documented operation answers generated requests without a 5xx and as its schema documents."""
    started = time.monotonic()
    excluded = DATACAT_EXCLUDED_CHECKS if "datacat" in (case.operation.definition.raw.get("tags") or ()) else []
    if case.operation.path == IMAGE_INGEST_PATH:
        excluded = IMAGE_EXCLUDED_CHECKS
    case.call_and_validate(base_url=monitor.web_url, timeout=TIMEOUT, excluded_checks=excluded)
    assert time.monotonic() - started < TIMEOUT
