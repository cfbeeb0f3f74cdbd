"""Timelines as pyannote.core Annotations, written as RTTM and JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyannote.core import Annotation, Segment


def annotation_from_segments(segments: Iterable[tuple[float, float, str]], uri: str) -> Annotation:
    annotation = Annotation(uri=uri)
    for i, (start_s, end_s, label) in enumerate(segments):
        if end_s > start_s:
            annotation[Segment(start_s, end_s), i] = label
    return annotation


def to_rttm(annotation: Annotation) -> str:
    return annotation.to_rttm()


def to_json(annotation: Annotation, kind: str) -> dict[str, Any]:
    segments = [
        {"speaker": str(label), "start_s": round(seg.start, 3), "end_s": round(seg.end, 3)}
        for seg, _, label in annotation.itertracks(yield_label=True)
    ]
    return {
        "uri": annotation.uri,
        "kind": kind,
        "speakers": sorted({s["speaker"] for s in segments}),
        "segments": segments,
    }


def annotation_from_json(data: dict[str, Any]) -> Annotation:
    """The timeline's segments; a speaker matched to an enrolled voice (``names``) is labelled with its name."""
    names = data.get("names") or {}
    return annotation_from_segments(
        ((s["start_s"], s["end_s"], names.get(s["speaker"], s["speaker"])) for s in data["segments"]),
        uri=data.get("uri", ""),
    )


def load_rttm(text: str) -> dict[str, Annotation]:
    """RTTM text -> {uri: Annotation} (SPEAKER lines only)."""
    annotations: dict[str, Annotation] = {}
    for i, line in enumerate(text.splitlines()):
        fields = line.split()
        if len(fields) < 8 or fields[0] != "SPEAKER":
            continue
        uri, start, duration, label = fields[1], float(fields[3]), float(fields[4]), fields[7]
        annotations.setdefault(uri, Annotation(uri=uri))[Segment(start, start + duration), i] = label
    return annotations
