"""``rtsep eval``: score diarization timelines and speaker tracks against references.

* **Diarization**: DER with pyannote.metrics (collar 0.5 s in pyannote's convention, i.e. ±0.25 s around every
  reference boundary, as md-eval's ``-c 0.25``; overlapped speech scored) with its components (missed speech,
  false alarm, speaker confusion, each a share of the reference speech), JER (pyannote.metrics, no collar, as
  DIHARD's dscore), and the speaker-count error (found minus true). For one RTTM pair, or two folders of
  ``*.rttm`` files matched by file id (a reference file id without a hypothesis is scored against an empty one).
  RTTM is checked with dscore's conventions: ``SPEAKER`` lines of 10 fields, channel ``1``, ``<NA>`` in the
  orthography, speaker-type, confidence and look-ahead fields, onsets >= 0 and durations > 0 (``SPKR-INFO``
  lines, comments ``;;`` and blank lines are skipped); anything else is an :class:`EvalError` naming the line.
* **Tracks**: SI-SDR (scale-invariant SDR, zero-mean) of separated or per-speaker tracks against reference
  tracks (folders of wavs), each reference matched to one track by the Hungarian method on the whole-meeting
  SI-SDR; SI-SDRi against the mixture; both over the whole meeting and inside the overlaps (the samples where
  the reference RTTM has two or more talkers and this reference talker is one of them, when its name is a
  label of the RTTM; otherwise every overlapped sample).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.core import Annotation, Segment

from rtsep.errors import RtsepError

COLLAR_S = 0.5  # pyannote's convention: the total width, ±0.25 s around each reference boundary
NA = "<NA>"


class EvalError(RtsepError):
    """An input of ``rtsep eval`` is missing or malformed."""

    error_code = "bad_eval_input"


# --------------------------------------------------------------------------- RTTM
def parse_rttm(text: str, source: str = "<rttm>") -> dict[str, Annotation]:
    """RTTM text -> {file id: Annotation}, checked with dscore's conventions (module docstring)."""
    annotations: dict[str, Annotation] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith(";;") or fields[0] == "SPKR-INFO":
            continue
        where = f"{source}:{number}"
        if fields[0] != "SPEAKER":
            raise EvalError(f"{where}: not a SPEAKER line (type {fields[0]!r})")
        if len(fields) != 10:
            raise EvalError(f"{where}: a SPEAKER line has 10 fields, this one {len(fields)}")
        _, uri, channel, onset, duration, ortho, stype, speaker, confidence, lookahead = fields
        if channel != "1":
            raise EvalError(f"{where}: channel must be 1, not {channel!r}")
        for name, value in (("orthography", ortho), ("speaker type", stype), ("confidence", confidence),
                            ("signal look-ahead", lookahead)):
            if value != NA:
                raise EvalError(f"{where}: the {name} field must be {NA}, not {value!r}")
        start_s, length_s = _number(onset, "onset", where), _number(duration, "duration", where)
        if start_s < 0:
            raise EvalError(f"{where}: negative onset {onset}")
        if length_s <= 0:
            raise EvalError(f"{where}: duration must be positive, not {duration}")
        annotation = annotations.setdefault(uri, Annotation(uri=uri))
        annotation[Segment(start_s, start_s + length_s), number] = speaker
    return annotations


def _number(text: str, name: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EvalError(f"{where}: the {name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise EvalError(f"{where}: the {name} {text!r} is not finite")
    return value


def read_rttm(path: Path) -> dict[str, Annotation]:
    """One RTTM file; an empty file (no speech) is {stem: empty Annotation}."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read RTTM {path}: {exc}") from None
    annotations = parse_rttm(text, str(path))
    return annotations or {path.stem: Annotation(uri=path.stem)}


def read_rttms(path: Path) -> dict[str, Annotation]:
    """An RTTM file, or every ``*.rttm`` in a folder, as {file id: Annotation}."""
    if path.is_dir():
        files = sorted(path.glob("*.rttm"))
        if not files:
            raise EvalError(f"no .rttm file in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise EvalError(f"no such file or folder: {path}")
    out: dict[str, Annotation] = {}
    for file in files:
        for uri, annotation in read_rttm(file).items():
            if uri in out:
                raise EvalError(f"{file}: file id {uri!r} is also in another RTTM file of {path}")
            out[uri] = annotation
    return out


def pair_annotations(reference: dict[str, Annotation],
                     hypothesis: dict[str, Annotation]) -> list[tuple[str, Annotation, Annotation]]:
    """(file id, reference, hypothesis) by file id; one file id on each side pairs whatever the names."""
    if len(reference) == 1 and len(hypothesis) == 1:
        (uri, ref), (_, hyp) = next(iter(reference.items())), next(iter(hypothesis.items()))
        return [(uri, ref, _renamed(hyp, uri))]
    extra = sorted(set(hypothesis) - set(reference))
    if extra:
        raise EvalError(f"hypothesis file ids without a reference: {', '.join(extra[:5])}")
    return [(uri, ref, _renamed(hypothesis.get(uri, Annotation(uri=uri)), uri))
            for uri, ref in sorted(reference.items())]


def _renamed(annotation: Annotation, uri: str) -> Annotation:
    out = annotation.copy()
    out.uri = uri
    return out


# --------------------------------------------------------------------------- diarization
def score_diarization(pairs: list[tuple[str, Annotation, Annotation]], collar_s: float = COLLAR_S) -> dict[str, Any]:
    """Per file and in total: DER and its components (shares of the reference speech), JER, speaker counts."""
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    der = DiarizationErrorRate(collar=collar_s, skip_overlap=False)
    jer = JaccardErrorRate(collar=0.0, skip_overlap=False)
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyannote warns that UEM was approximated from the extent
        for uri, ref, hyp in pairs:
            detail = der(ref, hyp, detailed=True)
            jer_value = float(jer(ref, hyp)) if ref.labels() else None
            files.append({"file": uri, **_components(detail), "jer": _round(jer_value),
                          "ref_speakers": len(ref.labels()), "hyp_speakers": len(hyp.labels()),
                          "speaker_count_error": len(hyp.labels()) - len(ref.labels())})
        total_detail = {k: float(der[k]) if pairs else 0.0 for k in
                        ("total", "missed detection", "false alarm", "confusion")}
        total_detail["diarization error rate"] = (
            (total_detail["missed detection"] + total_detail["false alarm"] + total_detail["confusion"])
            / total_detail["total"] if total_detail["total"] else 0.0)
        total_jer = float(abs(jer)) if any(f["jer"] is not None for f in files) else None
    count_errors = [f["speaker_count_error"] for f in files]
    total = {"files": len(files), **_components(total_detail), "jer": _round(total_jer),
             "speaker_count_mae": _round(float(np.mean(np.abs(count_errors)))) if files else None,
             "speaker_count_exact": sum(e == 0 for e in count_errors)}
    return {"collar_s": collar_s, "files": files, "total": total}


def _components(detail: dict) -> dict[str, float]:
    speech = detail["total"]
    share = (lambda x: x / speech) if speech else (lambda x: 0.0)
    return {"der": _round(detail["diarization error rate"]), "missed": _round(share(detail["missed detection"])),
            "false_alarm": _round(share(detail["false alarm"])), "confusion": _round(share(detail["confusion"])),
            "speech_s": round(speech, 3)}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# --------------------------------------------------------------------------- tracks
def si_sdr_db(estimate: np.ndarray, reference: np.ndarray) -> float | None:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference`` (zero-mean, same length); None where the
    estimate or the reference is silent (undefined)."""
    est = estimate.astype(np.float64) - estimate.mean()
    ref = reference.astype(np.float64) - reference.mean()
    ref_energy, est_energy = float(ref @ ref), float(est @ est)
    if ref_energy <= 1e-20 or est_energy <= 1e-20:
        return None
    target = (float(est @ ref) / ref_energy) * ref
    noise = est - target
    target_energy, noise_energy = float(target @ target), float(noise @ noise)
    if noise_energy <= 1e-30:
        return 300.0
    if target_energy <= 1e-30:
        return -300.0
    return 10 * math.log10(target_energy / noise_energy)


def activity_mask(annotation: Annotation, samples: int, rate_hz: int, label: str | None = None) -> np.ndarray:
    """Per-sample count of the annotation's active talkers (or 0/1 for one ``label``)."""
    count = np.zeros(samples, np.int32)
    for segment, _, spk in annotation.itertracks(yield_label=True):
        if label is not None and spk != label:
            continue
        a, b = max(0, int(round(segment.start * rate_hz))), min(samples, int(round(segment.end * rate_hz)))
        if b > a:
            count[a:b] += 1
    return count if label is None else np.minimum(count, 1)


def overlap_regions_of(annotation: Annotation) -> list[tuple[float, float]]:
    """(start_s, end_s) of the stretches where two or more of the annotation's talkers speak."""
    bounds = sorted({t for segment in annotation.itersegments() for t in (segment.start, segment.end)})
    out: list[tuple[float, float]] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        middle = (a + b) / 2
        speaking = sum(1 for segment in annotation.itersegments() if segment.start <= middle < segment.end)
        if speaking >= 2 and b > a:
            if out and abs(out[-1][1] - a) < 1e-9:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
    return out


def score_overlap_detection(reference: Annotation, detected_s: list[tuple[float, float]], duration_s: float,
                            frame_s: float = 0.01) -> dict[str, Any]:
    """Frame-level (``frame_s``) precision / recall / F1 of ``detected_s`` ((start_s, end_s) regions, e.g. an
    overlap detector's, or :func:`overlap_regions_of` a hypothesis) against the reference's overlapped speech
    (two or more talkers)."""
    frames = max(0, int(round(duration_s / frame_s)))
    truth = activity_mask(reference, frames, int(round(1 / frame_s))) >= 2
    found = np.zeros(frames, bool)
    for a, b in detected_s:
        found[max(0, int(round(a / frame_s))) : min(frames, int(round(b / frame_s)))] = True
    hits = int((truth & found).sum())
    precision = hits / int(found.sum()) if found.any() else None
    recall = hits / int(truth.sum()) if truth.any() else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    return {"precision": _round(precision), "recall": _round(recall), "f1": _round(f1),
            "reference_overlap_s": round(float(truth.sum()) * frame_s, 2),
            "detected_overlap_s": round(float(found.sum()) * frame_s, 2), "hits_s": round(hits * frame_s, 2)}


@dataclass(frozen=True)
class Track:
    audio: np.ndarray
    rate_hz: int


def read_wav(path: Path) -> Track:
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise EvalError(f"cannot read audio {path}: {exc}") from None
    return Track(audio.mean(axis=1), int(rate))


def read_tracks(folder: Path) -> dict[str, Track]:
    """Every ``*.wav`` of a folder, by file stem."""
    if not folder.is_dir():
        raise EvalError(f"no such folder: {folder}")
    tracks = {p.stem: read_wav(p) for p in sorted(folder.glob("*.wav"))}
    if not tracks:
        raise EvalError(f"no .wav file in {folder}")
    return tracks


def _at(track: Track, rate_hz: int, samples: int) -> np.ndarray:
    audio = track.audio
    if track.rate_hz != rate_hz:
        import soxr

        audio = soxr.resample(audio, track.rate_hz, rate_hz)
    out = np.zeros(samples, np.float32)
    out[: min(samples, audio.size)] = audio[:samples]
    return out


def score_tracks(references: dict[str, Track], estimates: dict[str, Track], mixture: Track | None = None,
                 reference_rttm: Annotation | None = None) -> dict[str, Any]:
    """Each reference talker's matched track (Hungarian on whole-meeting SI-SDR): SI-SDR over the meeting and
    inside the overlaps, and SI-SDRi against the mixture when one is given (module docstring)."""
    from scipy.optimize import linear_sum_assignment

    if not references or not estimates:
        raise EvalError("tracks: no reference or no estimated track to score")
    names = sorted(references)
    rate = references[names[0]].rate_hz
    if any(t.rate_hz != rate for t in references.values()):
        raise EvalError("reference tracks: all must have the same sample rate")
    samples = max(t.audio.size for t in references.values())
    refs = {n: _at(references[n], rate, samples) for n in names}
    est_names = sorted(estimates)
    ests = {n: _at(estimates[n], rate, samples) for n in est_names}
    mix = _at(mixture, rate, samples) if mixture is not None else None
    matrix = np.array([[si_sdr_db(ests[e], refs[r]) for e in est_names] for r in names], dtype=object)
    cost = np.array([[-(v if v is not None else -1000.0) for v in row] for row in matrix], dtype=np.float64)
    rows, cols = linear_sum_assignment(cost)
    match = {names[r]: est_names[c] for r, c in zip(rows, cols, strict=True)}
    overlap = activity_mask(reference_rttm, samples, rate) >= 2 if reference_rttm is not None else None
    labels = set(reference_rttm.labels()) if reference_rttm is not None else set()
    out = []
    for name in names:
        row: dict[str, Any] = {"reference": name, "track": match.get(name)}
        est = ests[match[name]] if name in match else None
        row["si_sdr_db"] = _round(si_sdr_db(est, refs[name]), 3) if est is not None else None
        row["mixture_si_sdr_db"] = _round(si_sdr_db(mix, refs[name]), 3) if mix is not None else None
        row["si_sdri_db"] = _difference(row["si_sdr_db"], row["mixture_si_sdr_db"])
        if overlap is not None:
            region = overlap & (activity_mask(reference_rttm, samples, rate, name) > 0) if name in labels else overlap
            row["overlap_s"] = round(float(region.sum()) / rate, 3)
            if region.any():
                row["overlap_si_sdr_db"] = (_round(si_sdr_db(est[region], refs[name][region]), 3)
                                            if est is not None else None)
                row["overlap_mixture_si_sdr_db"] = (_round(si_sdr_db(mix[region], refs[name][region]), 3)
                                                    if mix is not None else None)
            else:
                row["overlap_si_sdr_db"] = row["overlap_mixture_si_sdr_db"] = None
            row["overlap_si_sdri_db"] = _difference(row["overlap_si_sdr_db"], row["overlap_mixture_si_sdr_db"])
        out.append(row)
    summary = {key: _mean([r.get(key) for r in out]) for key in
               ("si_sdr_db", "si_sdri_db", "overlap_si_sdr_db", "overlap_si_sdri_db")}
    return {"rate_hz": rate, "references": out, "unmatched_references": [n for n in names if n not in match],
            "unmatched_tracks": sorted(set(est_names) - set(match.values())), "mean": summary}


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 3) if kept else None


# --------------------------------------------------------------------------- the command
def run_eval(ref: Path | None, hyp: Path | None, ref_tracks: Path | None, tracks: Path | None,
             mix: Path | None, collar_s: float = COLLAR_S) -> dict[str, Any]:
    """What ``rtsep eval`` reports (its JSON)."""
    if hyp is not None and ref is None:
        raise EvalError("--hyp needs --ref (the reference RTTM)")
    if (ref_tracks is None) != (tracks is None):
        raise EvalError("--ref-tracks and --tracks go together (reference and estimated tracks)")
    if hyp is None and tracks is None:
        raise EvalError("nothing to score: give --ref/--hyp (RTTM) and/or --ref-tracks/--tracks (wav folders)")
    if collar_s < 0:
        raise EvalError(f"--collar must be >= 0, not {collar_s}")
    report: dict[str, Any] = {}
    reference = read_rttms(ref) if ref is not None else None
    if hyp is not None and reference is not None:
        report["diarization"] = score_diarization(pair_annotations(reference, read_rttms(hyp)), collar_s)
    if ref_tracks is not None and tracks is not None:
        if reference is not None and len(reference) != 1:
            raise EvalError(f"tracks: the reference RTTM must hold one file id, {ref} holds {len(reference)}")
        annotation = next(iter(reference.values())) if reference is not None else None
        report["tracks"] = score_tracks(read_tracks(ref_tracks), read_tracks(tracks),
                                        read_wav(mix) if mix is not None else None, annotation)
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = []
    if "diarization" in report:
        d = report["diarization"]
        lines.append(f"Diarization (pyannote.metrics; DER collar ±{d['collar_s'] / 2:g} s, overlap scored; "
                     "JER no collar; shares of the reference speech)")
        head = f"{'file':<24}{'DER':>8}{'missed':>8}{'FA':>8}{'conf':>8}{'JER':>8}{'spk ref':>9}{'found':>7}"
        lines += [head, "-" * len(head)]
        for f in [*d["files"], {"file": "TOTAL", **d["total"]}]:
            speakers = (f"{f['ref_speakers']:>9}{f['hyp_speakers']:>7}" if "ref_speakers" in f else
                        f"{'MAE':>9}{_fmt(f['speaker_count_mae'], 2):>7}")
            lines.append(f"{f['file'][:23]:<24}{_pct(f['der'])}{_pct(f['missed'])}{_pct(f['false_alarm'])}"
                         f"{_pct(f['confusion'])}{_pct(f['jer'])}{speakers}")
    if "tracks" in report:
        t = report["tracks"]
        if lines:
            lines.append("")
        lines.append("Tracks (SI-SDR dB; each reference matched to one track by the Hungarian method; "
                     "SI-SDRi against the mixture; 'ovl': inside the reference's overlaps)")
        head = f"{'reference':<24}{'track':<20}{'SI-SDR':>8}{'SI-SDRi':>9}{'ovl s':>7}{'ovl SDR':>9}{'ovl SDRi':>10}"
        lines += [head, "-" * len(head)]
        for r in [*t["references"], {"reference": "MEAN", "track": "", **t["mean"]}]:
            lines.append(f"{r['reference'][:23]:<24}{(r['track'] or '-')[:19]:<20}{_fmt(r.get('si_sdr_db')):>8}"
                         f"{_fmt(r.get('si_sdri_db')):>9}{_fmt(r.get('overlap_s'), 1):>7}"
                         f"{_fmt(r.get('overlap_si_sdr_db')):>9}{_fmt(r.get('overlap_si_sdri_db')):>10}")
        if t["unmatched_references"]:
            lines.append(f"references without a track: {', '.join(t['unmatched_references'])}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{100 * value:>7.1f}%"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
