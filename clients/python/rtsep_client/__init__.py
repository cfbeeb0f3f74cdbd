"""Reference Python client for rtsep: streams audio over WS /v1/stream as a live client would."""

from rtsep_client.stream import StreamResult, stream_file

__all__ = ["StreamResult", "stream_file"]
