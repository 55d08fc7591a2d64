"""Tests of runwatch.client._client: DatacatClient's blocking mode against the in-process double."""

from __future__ import annotations

from typing import Any

import pytest

from runwatch.client import (
    ClientClosedError,
    DatacatClient,
    DatacatConnectionError,
    DatacatError,
)

from ._doubles import TIMEOUT, FakeServer, open_client


def test_blocking_errors_carry_status_message_and_field(fake: FakeServer) -> None:
    """A 4xx answer raises DatacatError with the server's status, message and field."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        with pytest.raises(DatacatError) as caught:
            client.log_event("nope", "e")
    assert caught.value.status == 404
    assert "unknown session" in caught.value.message
    assert str(caught.value).startswith("HTTP 404: unknown session")


def test_blocking_connection_errors_raise_a_connection_error(fake: FakeServer) -> None:
    """An unreachable server raises DatacatConnectionError, which is a ConnectionError with no status."""
    fake.down = True
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        with pytest.raises(ConnectionError) as caught:
            client.heartbeat("s1")
    assert isinstance(caught.value, DatacatConnectionError)
    assert caught.value.status is None


def test_blocking_calls_after_close_raise(fake: FakeServer) -> None:
    """A blocking call on a closed client raises ClientClosedError."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientClosedError):
        client.heartbeat("s1")


def test_create_session_puts_unknown_keywords_into_metadata(fake: FakeServer) -> None:
    """Known session fields pass through; other keywords become metadata; hostname defaults to this host."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        client.create_session(product="app", metadata={"a": 1}, user="alice")
    body = next(document for method, path, document in fake.requests if path == "/api/sessions")
    assert body["product"] == "app"
    assert body["metadata"] == {"a": 1, "user": "alice"}
    assert body["hostname"]


def test_token_is_sent_as_a_bearer_header_in_both_modes() -> None:
    """A token goes into every request's Authorization header, blocking or not."""
    seen: list[str | None] = []

    def transport(method: str, path: str, body: bytes | None, headers: Any) -> tuple[int, bytes]:
        seen.append(headers.get("Authorization"))
        return 200, b'{"ok": true}'

    for blocking in (True, False):
        with DatacatClient("http://fake.invalid", token="secret", transport=transport, blocking=blocking) as client:
            client.heartbeat("s")
            assert client.flush(TIMEOUT)
    assert seen == ["Bearer secret", "Bearer secret"]


def test_unreachable_server_at_create_session_raises(fake: FakeServer) -> None:
    """create_session is a blocking request in both modes, so an unreachable server raises."""
    fake.down = True
    with open_client(fake) as client, pytest.raises(DatacatConnectionError):
        client.create_session()
