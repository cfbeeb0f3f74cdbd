"""The exception tree.

Every error a client can cause carries a WebSocket close code and a short machine-readable
``error_code``; the transport turns it into a JSON ``error`` message followed by a close frame.
"""

from __future__ import annotations

# the base of the tree and the protocol's own errors live with the protocol (shipped with the Python client)
from rtsep_protocol.errors import ClientError, ProtocolViolation, RtsepError, UnsupportedAudio

__all__ = [
    "BadApiKey", "ClientError", "ConfigError", "IdleTimeout", "MessageTooBig", "ModelLoadError", "NotFound",
    "ProtocolViolation", "RtsepError", "ServerBusy", "ServerDraining", "SessionDeleted", "StoreError", "TooFast",
    "Unauthorized", "UnsupportedAudio", "VoiceExists", "UnknownVoice", "BadEnrollment",
]


class ConfigError(RtsepError):
    """A configuration value is invalid (raised at start-up, never per session)."""

    error_code = "config_error"


class ModelLoadError(RtsepError):
    """A model's weights could not be found or loaded."""

    error_code = "model_load_error"


class MessageTooBig(ClientError):
    close_code = 1009
    error_code = "message_too_big"


class TooFast(ClientError):
    """Audio arrives much faster than real time for too long (a live stream cannot do that)."""

    close_code = 4429
    error_code = "too_fast"


class IdleTimeout(ClientError):
    close_code = 4408
    error_code = "idle_timeout"


class BadApiKey(ClientError):
    close_code = 4401
    error_code = "unauthorized"


class ServerDraining(RtsepError):
    """The server is shutting down: no new sessions."""

    close_code = 1001
    error_code = "server_shutting_down"


class SessionDeleted(RtsepError):
    """The session's owner deleted it while it was live."""

    close_code = 4410
    error_code = "session_deleted"


class ServerBusy(RtsepError):
    """No capacity for another session."""

    close_code = 1013
    error_code = "too_many_sessions"


class NotFound(RtsepError):
    error_code = "not_found"


class Unauthorized(RtsepError):
    error_code = "unauthorized"


class StoreError(RtsepError):
    """The data directory could not be written (disk full, permissions)."""

    close_code = 1011
    error_code = "store_error"


class VoiceExists(RtsepError):
    """A voice of that name is enrolled already (HTTP 409; ``?replace=true`` replaces it)."""

    error_code = "voice_exists"


class UnknownVoice(ClientError):
    """A session asked to match a voice that is not enrolled."""

    close_code = 4404
    error_code = "unknown_voice"


class BadEnrollment(ClientError):
    """An enrollment clip cannot be used: not decodable audio, or too little speech in it."""

    close_code = 4400
    error_code = "bad_enrollment"
