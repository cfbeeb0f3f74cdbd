"""One API-key helper for every transport: the same precedence on an HTTP request and a WebSocket."""

from __future__ import annotations

import subprocess
import sys

import pytest
from starlette.requests import Request
from starlette.websockets import WebSocket

from rtsep.transport.auth import api_key_of


def scope(kind: str, headers: dict[str, str], query: str = "") -> dict:
    return {"type": kind, "path": "/", "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


def connections(headers: dict[str, str], query: str = ""):
    async def nothing():  # pragma: no cover - never called
        return {}

    yield Request(scope("http", headers, query))
    yield WebSocket(scope("websocket", headers, query), nothing, nothing)


@pytest.mark.parametrize("headers,query,expected", [
    ({"Authorization": "Bearer k-one", "X-API-Key": "k-two"}, "api_key=k-three", "k-one"),
    ({"Authorization": "bearer  k-one "}, "", "k-one"),
    ({"Authorization": "Basic abc", "X-API-Key": "k-two"}, "api_key=k-three", "k-two"),
    ({}, "api_key=k-three", "k-three"),
    ({"Authorization": "Bearer"}, "", None),
    ({}, "", None),
])
def test_the_key_is_found_the_same_way_on_every_transport(headers, query, expected):
    for connection in connections(headers, query):
        assert api_key_of(connection) == expected, type(connection).__name__


def test_loading_the_webrtc_settings_does_not_import_aiortc():
    code = "import sys, rtsep.config, rtsep.transport.webrtc.config; print('aiortc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
