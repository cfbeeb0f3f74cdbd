"""Signalling (sans-I/O apart from aiortc's SDP parser): the offer a client posts, what its m-lines are for,
and the RTC configuration (ICE servers) the server's peer connections use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer

from rtsep.errors import MessageTooBig, ProtocolViolation
from rtsep.protocol.messages import parse_json_object
from rtsep.transport.webrtc.config import WebRtcConfig

OPUS_RATE_HZ = 48000  # aiortc decodes Opus to 48 kHz; the offer is answered with Opus only
OFFER_OPTIONS = ("max_speakers", "client", "voices")  # the session options a client may put beside sdp/type


def rtc_configuration(config: WebRtcConfig) -> RTCConfiguration:
    # an explicit (possibly empty) list: aiortc would otherwise use a public STUN server
    return RTCConfiguration(iceServers=[
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in config.ice_servers
    ])


@dataclass(frozen=True)
class Offer:
    sdp: str
    options: dict[str, Any]


def parse_offer(body: bytes, max_bytes: int) -> Offer:
    """``{"sdp": ..., "type": "offer", "max_speakers"?: int, "client"?: str}`` -> Offer."""
    if len(body) > max_bytes:
        raise MessageTooBig(f"offer of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    obj = parse_json_object(body, "the offer")
    if obj.get("type") != "offer":
        raise ProtocolViolation(f"'type' must be \"offer\", got {obj.get('type')!r}", error_code="bad_offer")
    sdp = obj.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ProtocolViolation("'sdp' must be a non-empty string", error_code="bad_offer")
    options = {k: v for k, v in obj.items() if k not in ("sdp", "type")}
    unknown = sorted(set(options) - set(OFFER_OPTIONS))
    if unknown:
        raise ProtocolViolation(f"unknown offer field(s) {unknown}; session options are {list(OFFER_OPTIONS)}",
                                error_code="bad_offer")
    return Offer(sdp, options)


@dataclass(frozen=True)
class OfferLayout:
    """What the offer's m-lines are for, in m-line order: ``"mic"``, ``"slot"`` or ``"data"``."""

    roles: tuple[str, ...]

    @property
    def slots(self) -> int:
        return self.roles.count("slot")


def describe_offer(sdp: str) -> OfferLayout:
    from aiortc import sdp as sdp_module

    try:
        description = sdp_module.SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - the parser raises many kinds on bad input
        raise ProtocolViolation(f"the offer's SDP could not be parsed: {exc!r}", error_code="bad_offer") from None
    roles = []
    for i, media in enumerate(description.media):
        if media.kind == "application":
            roles.append("data")
        elif media.kind != "audio":
            raise ProtocolViolation(f"m-line {i} is {media.kind}; rtsep takes audio only", error_code="bad_offer")
        elif media.direction in ("sendonly", "sendrecv"):
            if "mic" in roles:
                raise ProtocolViolation("the offer sends more than one audio track; send one microphone",
                                        error_code="bad_offer")
            roles.append("mic")
        elif media.direction == "recvonly":
            roles.append("slot")
        else:
            raise ProtocolViolation(f"audio m-line {i} is {media.direction}; use sendonly (microphone) or "
                                    "recvonly (speaker slot)", error_code="bad_offer")
    if "mic" not in roles:
        raise ProtocolViolation("the offer has no audio track to receive: add the microphone (sendonly)",
                                error_code="bad_offer")
    return OfferLayout(tuple(roles))


OFFER_SCHEMA = {
    "type": "object",
    "required": ["sdp", "type"],
    "properties": {
        "sdp": {"type": "string", "description": "the client's SDP offer (ICE candidates gathered)"},
        "type": {"type": "string", "enum": ["offer"]},
        "max_speakers": {"type": "integer", "minimum": 1},
        "client": {"type": "string"},
        "voices": {"description": "enrolled voices to name speakers by: \"all\" or a list of names",
                   "oneOf": [{"type": "string", "enum": ["all"]},
                             {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
    },
    "additionalProperties": False,
}
