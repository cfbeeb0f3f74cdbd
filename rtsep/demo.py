"""The bundled demo: pyannote.audio's real two-talker sample, processed and scored (evaluation only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rtsep.errors import ConfigError
from rtsep.offline import OfflineConfig
from rtsep.pipeline import PipelineConfig


def sample_paths() -> tuple[Path, Path]:
    """(sample.wav, sample.rttm) inside the installed pyannote.audio package."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("pyannote.audio is not installed: it carries the demo sample")
    root = Path(list(spec.submodule_search_locations)[0]) / "sample"
    return root / "sample.wav", root / "sample.rttm"


def diarization_error_rate(reference_rttm: str, hypothesis: dict[str, Any], collar_s: float = 0.5) -> dict[str, float]:
    """DER with pyannote.metrics (``collar_s`` in total, i.e. ±collar_s/2 around reference boundaries)."""
    import warnings

    from pyannote.metrics.diarization import DiarizationErrorRate

    from rtsep.diarize.timeline import annotation_from_json, load_rttm

    reference = next(iter(load_rttm(reference_rttm).values()))
    metric = DiarizationErrorRate(collar=collar_s, skip_overlap=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detail = metric(reference, annotation_from_json({**hypothesis, "uri": reference.uri}), detailed=True)
    total = detail["total"] or 1.0
    return {
        "der": round(detail["diarization error rate"], 4),
        "missed": round(detail["missed detection"] / total, 4),
        "false_alarm": round(detail["false alarm"] / total, 4),
        "confusion": round(detail["confusion"] / total, 4),
    }


def run_demo(out_dir: Path, config: PipelineConfig, offline: OfflineConfig | None = None) -> dict[str, Any]:
    from rtsep.compose import run_process
    from rtsep.diarize.timeline import load_rttm, to_json
    from rtsep.transport.file import plot_timeline

    wav, rttm = sample_paths()
    result = run_process(wav, out_dir, config, offline)
    reference_text = rttm.read_text()
    reference = to_json(next(iter(load_rttm(reference_text).values())), "reference")
    # the same picture as `rtsep process` writes, with the reference rows on top
    plot_timeline({"final": result.final, "live": result.live}, result.duration_s, out_dir / "timeline.png",
                  reference=reference)
    return {
        "input": str(wav),
        "out": str(out_dir),
        "duration_s": result.duration_s,
        "speakers": result.speakers,
        "final": diarization_error_rate(reference_text, result.final),
        "live": diarization_error_rate(reference_text, result.live),
        "note": "DER with pyannote.metrics, collar ±0.25 s, overlap scored",
        "separated": sorted(str(p) for p in result.files if p.parent.name == "separated" and p.suffix == ".wav"),
        "adaptation": result.adaptation.as_dict() if result.adaptation is not None else None,
    }
