"""The API key a client presents when it creates a session, the same way on every transport."""

from __future__ import annotations

from starlette.requests import HTTPConnection


def api_key_of(connection: HTTPConnection) -> str | None:
    """``Authorization: Bearer <key>``, else ``X-API-Key``, else ``?api_key=`` (browsers cannot set headers on
    a WebSocket). Works for an HTTP request and a WebSocket alike."""
    scheme, _, value = (connection.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return connection.headers.get("x-api-key") or connection.query_params.get("api_key")
