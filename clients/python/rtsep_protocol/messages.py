"""JSON control messages of protocol v1 as dataclasses, with strict decoding of client input.

Client -> server: ``start``, ``stop``.  Server -> client: ``ready``, ``speaker``, ``speaker_named``, ``segment``,
``track``, ``timeline``, ``stats``, ``gap``, ``error``, ``done``.  Every message is a JSON object with a ``type`` key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rtsep_protocol import PROTOCOL_VERSION
from rtsep_protocol.errors import ProtocolViolation, UnsupportedAudio
from rtsep_protocol.pcm import ENCODINGS

__all__ = [
    "CLIENT_MESSAGES", "Done", "ErrorMessage", "Gap", "MAX_CHANNELS", "MAX_SAMPLE_RATE_HZ", "MIN_SAMPLE_RATE_HZ",
    "Message", "Ready", "SERVER_MESSAGES", "Segment", "SpeakerActivity", "SpeakerNamed", "Start", "Stats", "Stop",
    "Stored",
    "TimelineMessage", "TrackAnnouncement", "encode_message", "parse_client_message", "parse_json_object",
    "parse_server_message",
]

MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
MAX_CHANNELS = 2
MAX_VOICES = 64  # enrolled voices one session may name


# --- client -> server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    type: ClassVar[str] = "start"
    sample_rate: int
    encoding: str = "pcm_s16le"
    channels: int = 1
    max_speakers: int | None = None
    output_encoding: str = "pcm_s16le"
    send_audio: bool = True
    client: str | None = None
    # enrolled voices to name speakers by: a list of names, or "all" (every enrolled voice); None: no naming
    voices: list[str] | str | None = None
    omitted: ClassVar[tuple[str, ...]] = ("voices",)  # not sent while None (a server without voices accepts it)


@dataclass(frozen=True)
class Stop:
    type: ClassVar[str] = "stop"


# --- server -> client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    type: ClassVar[str] = "ready"
    session_id: str
    token: str
    sample_rate: int
    output_encoding: str
    max_message_bytes: int
    max_speakers: int
    step_s: float
    protocol: int = PROTOCOL_VERSION
    separator: str | None = None


@dataclass(frozen=True)
class SpeakerActivity:
    type: ClassVar[str] = "speaker"
    speaker: str
    index: int
    event: str  # "started" | "stopped"
    time_s: float
    sample: int
    name: str | None = None  # the enrolled voice this speaker was matched to, once it is (see speaker_named)
    omitted: ClassVar[tuple[str, ...]] = ("name",)  # left out of the JSON while None / empty


@dataclass(frozen=True)
class SpeakerNamed:
    """Speaker ``speaker`` matched the enrolled voice ``name`` (cosine ``similarity`` of its centroid to the voice);
    ``name`` None: it lost its name to a speaker that matches that voice clearly better."""

    type: ClassVar[str] = "speaker_named"
    speaker: str
    index: int
    name: str | None
    similarity: float


@dataclass(frozen=True)
class Segment:
    type: ClassVar[str] = "segment"
    speaker: str
    index: int
    start_s: float
    end_s: float
    kind: str = "live"
    name: str | None = None
    omitted: ClassVar[tuple[str, ...]] = ("name",)


@dataclass(frozen=True)
class TrackAnnouncement:
    type: ClassVar[str] = "track"
    speaker: str
    index: int
    url: str
    kind: str = "speaker"  # "speaker" (diarization-routed) | "source" (separator output)


@dataclass(frozen=True)
class Stored:
    """Samples ``[0, end_sample)`` of track ``index`` are committed to the store (they survive the server's
    death). Audio frames go out live, before their commit; this mark follows it."""

    type: ClassVar[str] = "stored"
    speaker: str
    index: int
    end_sample: int
    end_s: float


@dataclass(frozen=True)
class TimelineMessage:
    type: ClassVar[str] = "timeline"
    kind: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # speaker -> enrolled voice, where matched
    omitted: ClassVar[tuple[str, ...]] = ("names",)


@dataclass(frozen=True)
class Stats:
    type: ClassVar[str] = "stats"
    audio_in_s: float
    processed_s: float
    real_time_factor: float
    queue_depth: int
    dropped_chunks: int


@dataclass(frozen=True)
class Gap:
    """Samples ``[sample, sample + samples)`` of ``path`` were dropped under overload: silence there, no labels;
    later positions are unchanged."""

    type: ClassVar[str] = "gap"
    path: str  # "diarization" | "separation" | "input"
    sample: int
    samples: int
    start_s: float
    duration_s: float


@dataclass(frozen=True)
class ErrorMessage:
    type: ClassVar[str] = "error"
    code: str
    message: str
    close_code: int


@dataclass(frozen=True)
class Done:
    type: ClassVar[str] = "done"
    session_id: str
    duration_s: float
    speakers: list[str]
    timeline_url: str
    names: dict[str, str] = field(default_factory=dict)  # final speaker -> enrolled voice, where matched
    omitted: ClassVar[tuple[str, ...]] = ("names",)


CLIENT_MESSAGES: dict[str, type] = {"start": Start, "stop": Stop}
SERVER_MESSAGES: dict[str, type] = {
    cls.type: cls
    for cls in (Ready, SpeakerActivity, SpeakerNamed, Segment, TrackAnnouncement, Stored, TimelineMessage, Stats, Gap,
                ErrorMessage, Done)
}

Message = Any


def encode_message(message: Message) -> str:
    """Dataclass -> compact JSON text with ``type`` first."""
    body = {"type": message.type, **dataclasses.asdict(message)}
    for key in getattr(message, "omitted", ()):  # optional fields a client that does not use them never sees
        if body.get(key) in (None, {}, []):
            del body[key]
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def parse_json_object(text: str | bytes, what: str = "message") -> dict[str, Any]:
    """JSON text -> dict, or ProtocolViolation('bad_json') naming ``what`` was malformed."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolViolation(f"{what} is not valid JSON: {exc}", error_code="bad_json") from None
    if not isinstance(obj, dict):
        raise ProtocolViolation(f"{what} must be a JSON object", error_code="bad_json")
    return obj


def _parse_object(text: str | bytes) -> dict[str, Any]:
    obj = parse_json_object(text)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolViolation("message has no string 'type'", error_code="bad_message")
    return obj


def _check_type(name: str, value: Any, expected: type | tuple[type, ...], *, optional: bool = False) -> None:
    if optional and value is None:
        return
    # bool is an int subclass: never accept it where a number is expected
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise ProtocolViolation(f"'{name}' must be {_type_name(expected)}, got a boolean", error_code="bad_message")
    if not isinstance(value, expected):
        raise ProtocolViolation(
            f"'{name}' must be {_type_name(expected)}, got {type(value).__name__}", error_code="bad_message"
        )


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def parse_client_message(text: str | bytes) -> Start | Stop:
    """Strictly decode one client text message; raises ProtocolViolation / UnsupportedAudio."""
    obj = _parse_object(text)
    kind = obj.pop("type")
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        raise ProtocolViolation(
            f"unknown message type {kind!r}; expected one of {sorted(CLIENT_MESSAGES)}", error_code="unknown_message"
        )
    if cls is Stop:
        if obj:
            raise ProtocolViolation(f"'stop' takes no fields, got {sorted(obj)}", error_code="bad_message")
        return Stop()
    return _parse_start(obj)


def _parse_start(obj: dict[str, Any]) -> Start:
    known = {f.name for f in dataclasses.fields(Start)}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ProtocolViolation(f"unknown 'start' field(s) {unknown}", error_code="bad_message")
    if "sample_rate" not in obj:
        raise ProtocolViolation("'start' needs 'sample_rate'", error_code="bad_message")
    _check_type("sample_rate", obj["sample_rate"], int)
    _check_type("encoding", obj.get("encoding", "pcm_s16le"), str)
    _check_type("channels", obj.get("channels", 1), int)
    _check_type("max_speakers", obj.get("max_speakers"), int, optional=True)
    _check_type("output_encoding", obj.get("output_encoding", "pcm_s16le"), str)
    _check_type("send_audio", obj.get("send_audio", True), bool)
    _check_type("client", obj.get("client"), str, optional=True)
    voices = obj.get("voices")
    if voices is not None and voices != "all":
        if not isinstance(voices, list) or not voices or not all(isinstance(v, str) and v for v in voices):
            raise ProtocolViolation("'voices' must be \"all\" or a non-empty list of enrolled voice names",
                                    error_code="bad_message")
        if len(voices) > MAX_VOICES:
            raise ProtocolViolation(f"'voices' names at most {MAX_VOICES} voices", error_code="bad_message")
    start = Start(**obj)
    if not MIN_SAMPLE_RATE_HZ <= start.sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise UnsupportedAudio(
            f"sample_rate {start.sample_rate} Hz is outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz",
            error_code="unsupported_rate",
        )
    for name in ("encoding", "output_encoding"):
        if getattr(start, name) not in ENCODINGS:
            raise UnsupportedAudio(
                f"unsupported {name} {getattr(start, name)!r}; expected one of {sorted(ENCODINGS)}",
                error_code="unsupported_encoding",
            )
    if not 1 <= start.channels <= MAX_CHANNELS:
        raise UnsupportedAudio(
            f"channels must be 1 or 2 (stereo is downmixed), got {start.channels}", error_code="unsupported_channels"
        )
    if start.max_speakers is not None and start.max_speakers < 1:
        raise ProtocolViolation("'max_speakers' must be >= 1", error_code="bad_message")
    return start


def parse_server_message(text: str | bytes) -> Message:
    """Decode a server message (used by clients); unknown extra keys are ignored for forward compatibility."""
    obj = _parse_object(text)
    kind = obj.pop("type")
    cls = SERVER_MESSAGES.get(kind)
    if cls is None:
        raise ProtocolViolation(f"unknown server message type {kind!r}", error_code="unknown_message")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in obj.items() if k in names})
    except TypeError as exc:
        raise ProtocolViolation(f"malformed {kind!r} message: {exc}", error_code="bad_message") from None
