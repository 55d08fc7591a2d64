"""``runwatch tail``: print live events from a server's /ws websocket."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import FAILED, describe_os_error, fail, format_number, stdout_console

if TYPE_CHECKING:
    from rich.text import Text


def tail(
    url: Annotated[str, typer.Option(help="The runwatch server.", envvar="RUNWATCH_URL")] = "http://127.0.0.1:8080",
    run: Annotated[list[str] | None, typer.Option("--run", help="Only this run (repeatable).")] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Only these kinds, comma-separated: metric, log, state, lifecycle, exception, heartbeat, alert."
        ),
    ] = None,
    metrics: Annotated[str | None, typer.Option(help="Only these metrics, comma-separated (globs: train/*).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print each event as a JSON line.")] = False,
    token: Annotated[str | None, typer.Option(envvar="RUNWATCH_TOKEN", help="Bearer token of the server.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    lines: Annotated[
        int,
        typer.Option(
            "-n",
            "--lines",
            min=0,
            max=1_000_000,
            help="First print the latest N events the server keeps in memory (its max_events), then live ones.",
        ),
    ] = 0,
) -> None:
    """Print live events from a server's /ws websocket, one line each, until Ctrl-C (or --count).

    With -n N the latest N matching events come first, like tail -n N -f:
    no event is missed or repeated between those and the live ones.
    """
    import asyncio

    from ..events import EVENT_CLASSES

    kind_list = _split(kinds)
    for kind in kind_list:
        if kind not in EVENT_CLASSES:
            raise fail(f"--kinds: unknown kind {kind!r} (known: {', '.join(EVENT_CLASSES)})")
    try:
        address = _websocket_url(url, run or [], kind_list, _split(metrics), replay=lines)
    except ValueError as exc:
        raise fail(f"--url: {exc}") from None
    printer = _json_line if json_output else _pretty_printer()
    try:
        code = asyncio.run(_tail(address, token, count, printer))
    except KeyboardInterrupt:
        code = 0
    except BrokenPipeError:  # the reader went away (`runwatch tail | head`): stop quietly
        _silence_stdout()
        code = 0
    raise typer.Exit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit does not fail again on the broken pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _websocket_url(url: str, runs: list[str], kinds: list[str], metrics: list[str], *, replay: int = 0) -> str:
    """``http://host:port`` (or ws://, or already ending in /ws) → the /ws URL with the filter (and replay)."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"expected a URL such as http://127.0.0.1:8080, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    query = {
        key: ",".join(values) for key, values in (("runs", runs), ("kinds", kinds), ("metrics", metrics)) if values
    }
    if replay:
        query["replay"] = str(replay)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query, safe=",/*"), ""))


async def _tail(address: str, token: str | None, count: int | None, printer: Callable[[dict[str, Any]], None]) -> int:
    """Print events until ``count`` were printed or the server closes; returns the exit code."""
    import orjson
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

    headers = {"Authorization": f"Bearer {token}"} if token else None
    printed = 0
    try:
        async with connect(address, additional_headers=headers, open_timeout=10, max_size=64 * 1024 * 1024) as ws:
            async for message in ws:
                data = orjson.loads(message)
                kind = data.get("type")
                if kind == "subscribed":
                    typer.echo(f"tail: subscribed to {address}", err=True)
                elif kind == "lagged":
                    typer.echo(f"tail: too slow, the server dropped {data.get('dropped')} event(s)", err=True)
                elif kind == "error":
                    typer.echo(f"tail: the server said: {data.get('message')}", err=True)
                elif kind == "batch":
                    for event in data.get("events", ()):
                        printer(event)
                        printed += 1
                        if count is not None and printed >= count:
                            sys.stdout.flush()
                            return 0
                    sys.stdout.flush()
            close_code, reason = ws.close_code, ws.close_reason
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = "; pass --token (or set RUNWATCH_TOKEN)" if status in (401, 403) else ""
        raise fail(f"{address} refused the websocket with HTTP {status}{hint}", FAILED) from None
    except InvalidURI as exc:
        raise fail(f"--url: {exc}") from None
    except ConnectionClosed as exc:
        close_code, reason = exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
        raise fail(f"cannot connect to {address}: {message}", FAILED) from None
    sys.stdout.flush()
    typer.echo(f"tail: the server closed the connection ({close_code} {reason})".rstrip(), err=True)
    if count is not None or close_code not in (1000, 1001):
        return FAILED
    return 0


def _json_line(event: dict[str, Any]) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(event).decode() + "\n")


def _pretty_printer() -> Callable[[dict[str, Any]], None]:
    console = stdout_console()

    def print_event(event: dict[str, Any]) -> None:
        console.print(_pretty(event), soft_wrap=True)

    return print_event


def _pretty(event: dict[str, Any]) -> Text:
    """One line: time, run, kind, then what matters for that kind."""
    import orjson
    from rich.text import Text

    def compact(value: Any, limit: int = 160) -> str:
        text = orjson.dumps(value).decode()
        return text if len(text) <= limit else text[: limit - 3] + "..."

    timestamp = event.get("timestamp")
    when = datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S.%f")[:-3] if isinstance(timestamp, float) else "?"
    kind = str(event.get("kind"))
    if kind == "metric":
        values = " ".join(
            f"{name}={'nan' if value is None else format_number(value)}"
            for name, value in (event.get("values") or {}).items()
        )
        step = event.get("step")
        detail = f"step={step} {values}" if step is not None else values
    elif kind == "log":
        detail = f"{event.get('level')} {event.get('type')} {compact(event.get('data'))}"
    elif kind == "lifecycle":
        detail = str(event.get("transition"))
        if event.get("final_reward") is not None:
            detail += f" final_reward={format_number(event['final_reward'])}"
    elif kind == "state":
        detail = compact(event.get("patch"))
    elif kind == "exception":
        detail = f"{event.get('severity')} {event.get('error_type')}: {event.get('message')}"
    elif kind == "alert":
        value = format_number(event.get("value"))
        detail = f"{event.get('state')} {event.get('rule')} ({event.get('severity')}) value={value}"
    elif kind == "heartbeat":
        detail = " ".join(f"{key}={value}" for key, value in (event.get("counters") or {}).items())
    else:
        detail = compact(event)
    return Text.assemble(
        (when, "dim"), " ", (str(event.get("run_id")), "cyan"), " ", (f"{kind:<9}", "bold"), " ", detail
    )
