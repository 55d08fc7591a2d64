"""A runwatch server's URL for remote mode and ``runwatch sync``: checked once, and shown without secrets.

The requests themselves go through the standard-library client's keep-alive
transport (:class:`runwatch.client.HTTPTransport`), and when to try again is
its :func:`~runwatch.client.is_retryable` and :func:`~runwatch.client.backoff_delay`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["check_server_url", "display_url"]


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash, once it is an ``http(s)://host[:port][/prefix]`` URL without credentials.

    Raises:
        ValueError: another scheme, no host, a query or fragment, or a user or
            password in it (a token goes in the ``token`` setting, never in a URL).
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # parses it: a bad port raises here
    except ValueError:
        raise ValueError("the server URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the server URL must start with http:// or https:// and name a host, got {parts.scheme}://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the server URL must not hold a user or password: pass the token as the token setting")
    if parts.query or parts.fragment:
        raise ValueError("the server URL must not have a query or fragment")
    del port
    return url.rstrip("/")


def display_url(url: str) -> str:
    """The URL as it may be shown: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
