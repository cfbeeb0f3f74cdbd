"""The base of rtsep's exception tree, and the two errors the wire protocol itself raises.

Every error a client can cause carries a WebSocket close code and a short machine-readable ``error_code``;
the server turns it into a JSON ``error`` message followed by a close frame. rtsep.errors builds the rest
of the tree on these classes (and re-exports them), so that server and client catch the same ones.
"""

from __future__ import annotations

__all__ = ["ClientError", "ProtocolViolation", "RtsepError", "UnsupportedAudio"]


class RtsepError(Exception):
    """Base of every error rtsep raises on purpose."""

    close_code: int = 1011
    error_code: str = "internal_error"

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code


class ClientError(RtsepError):
    """The client sent something invalid; only its own session ends."""

    close_code = 4400
    error_code = "bad_request"


class ProtocolViolation(ClientError):
    """Malformed or out-of-order protocol message (bad JSON, unknown type, audio before start...)."""


class UnsupportedAudio(ClientError):
    """The announced audio format (rate, encoding, channels) is not supported."""

    error_code = "unsupported_audio"
