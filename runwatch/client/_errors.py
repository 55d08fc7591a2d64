"""The client's exceptions.

Exceptions::

    DatacatError                      an answer >= 400 (status, message, field)
     ├── DatacatConnectionError (ConnectionError)   no answer: status is None
     └── ClientClosedError (RuntimeError)           a blocking call after close()
"""

from __future__ import annotations

__all__ = ["ClientClosedError", "DatacatConnectionError", "DatacatError", "describe"]


class DatacatError(Exception):
    """The server refused a request, or could not be reached.

    Attributes:
        status: the HTTP status, or ``None`` when no answer arrived.
        message: the server's message (or the connection error's).
        field: the request field the server named, if any.
    """

    def __init__(self, status: int | None, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        super().__init__(status, message, field)

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"HTTP {self.status}: {self.message}{where}" if self.status is not None else self.message


class DatacatConnectionError(DatacatError, ConnectionError):
    """No answer: the server is unreachable, closed the connection or timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class ClientClosedError(DatacatError, RuntimeError):
    """A blocking call on a closed client."""

    def __init__(self) -> None:
        super().__init__(None, "the client is closed")


def describe(error: BaseException) -> str:
    """``Type: message`` of an exception, even one whose ``__str__`` raises."""
    try:
        text = str(error)
    except Exception:
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
