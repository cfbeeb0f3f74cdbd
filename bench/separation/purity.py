"""How pure is the speech that in-session adaptation trains on? Checks the single-talker turns `rtsep process`
finds in the process_remix meetings against the truth, before and after a purity filter.

    python bench/separation/purity.py [--folds 5] [--layout L] [--out DIR] [--min-turn S] [--edge-trim S]
                                      [--filter [--min-similarity S] [--min-periodicity P] [--min-window S]
                                      [--similarities] [--export-material DIR]]

The meetings are built as in process_remix.py (``--layout``); `rtsep process --separator none`
diarizes it (cached in DIR/<meeting>/out). The adaptation's spans (rtsep.separate.adapt.single_talker_spans of the
final timeline) are compared with the truth at 10 ms: per diarized talker, seconds of one true talker alone
(the one most of them belong to), of another talker alone, of two or more talkers (overlap; ``test_overlap_s``:
of that, inside the inserted test overlaps), and of silence.
With ``--filter``, the spans are first passed through rtsep.separate.purity and the same table is printed;
``--similarities`` adds how the windows' embedding similarities (own / other talker's centroid) are spread over
clean speech, overlaps and the inserted test overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval import SNRS_DB, pyannote_sample, reference_turns
from process_remix import RATE_HZ, TEST_GAP_S, build_conversation

from rtsep.separate.adapt import single_talker_spans
from rtsep.separate.purity import PurityConfig, PurityFilter

STEP_S = 0.01


def reference_activity(duration_s: float) -> tuple[list[str], np.ndarray]:
    """(talkers, activity (talkers, frames) at STEP_S) of the pyannote sample from sample.rttm."""
    turns = reference_turns()
    names = sorted(turns)
    grid = np.arange(0, duration_s, STEP_S)
    active = np.zeros((len(names), len(grid)), bool)
    for i, name in enumerate(names):
        for a, b in turns[name]:
            active[i, (grid >= a) & (grid < b)] = True
    return names, active


def meeting_truth(folds: int, fold: int, snrs_db: tuple = SNRS_DB) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(meeting audio, truth activity (2, frames) at STEP_S, test parts) for process_remix's conversation layout:
    the sample's activity with the muted fold silenced, shifted past each inserted overlap, which is active for
    both talkers."""
    audio, tests = build_conversation(folds, fold, snrs_db)
    original = sf.info(str(pyannote_sample()[0])).duration
    _, active = reference_activity(original)
    # the muted parts are silent in the meeting: a frame is active only where the meeting has signal there
    frames = int(np.ceil(len(audio) / RATE_HZ / STEP_S))
    truth = np.zeros((active.shape[0], frames), bool)
    silence = int(TEST_GAP_S * RATE_HZ)
    shift, previous_point = 0, 0
    for t in tests + [None]:
        point = (t["start"] - silence - shift) if t is not None else len(audio) - shift  # original sample index
        a0, a1 = int(previous_point / RATE_HZ / STEP_S), int(point / RATE_HZ / STEP_S)
        m0 = int((previous_point + shift) / RATE_HZ / STEP_S)
        n = max(0, min(a1 - a0, active.shape[1] - a0, frames - m0))
        truth[:, m0 : m0 + n] = active[:, a0 : a0 + n]
        if t is None:
            break
        s0, s1 = int(t["start"] / RATE_HZ / STEP_S), int(t["end"] / RATE_HZ / STEP_S)
        truth[:, s0:s1] = True
        shift += 2 * silence + (t["end"] - t["start"])
        previous_point = point
    # silence the muted fold: frames whose audio is (exactly) zero
    hop = int(STEP_S * RATE_HZ)
    energy = np.array([np.abs(audio[i * hop : (i + 1) * hop]).max(initial=0.0) for i in range(frames)])
    truth[:, energy == 0.0] = False
    return audio, truth, tests


def diarize(wav: Path, out: Path) -> list[dict]:
    timeline = out / "timeline.json"
    if not timeline.exists():
        cmd = [sys.executable, "-m", "rtsep", "process", str(wav), "--out", str(out), "--quiet", "--separator", "none"]
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(timeline.read_text())["segments"]


def diarized_meeting(folder: Path, folds: int, fold: int, snrs_db: tuple, **span_options: float) -> tuple:
    """(audio, truth, tests, inserted, spans) of one process_remix meeting: meeting_truth, a frame mask of the
    inserted overlaps at STEP_S, and the adaptation's spans of its diarization (cached in ``folder``;
    ``span_options``: single_talker_spans' min_turn_s / edge_trim_s, rtsep's defaults when not given)."""
    folder.mkdir(parents=True, exist_ok=True)
    audio, truth, tests = meeting_truth(folds, fold, snrs_db)
    inserted = np.zeros(truth.shape[1], bool)
    for t in tests:
        inserted[int(t["start"] / RATE_HZ / STEP_S) : int(t["end"] / RATE_HZ / STEP_S)] = True
    wav = folder / "meeting.wav"
    if not wav.exists():
        sf.write(str(wav), audio, RATE_HZ, subtype="FLOAT")
    return audio, truth, tests, inserted, single_talker_spans(diarize(wav, folder / "out"), **span_options)


def composition(spans: dict[str, list[tuple[float, float]]], truth: np.ndarray,
                inserted: np.ndarray) -> dict[str, dict[str, float]]:
    """Per diarized talker: seconds of its main true talker alone, of another alone, of overlap (and of that, in the
    inserted test overlaps: ``inserted``, a frame mask), of silence."""
    out = {}
    for spk, items in sorted(spans.items()):
        frames = np.concatenate([np.arange(int(a / STEP_S), min(int(b / STEP_S), truth.shape[1])) for a, b in items])
        count = truth[:, frames].sum(0)
        alone = [(truth[i, frames] & (count == 1)).sum() for i in range(truth.shape[0])]
        main = int(np.argmax(alone))
        out[spk] = {"talker": main, "pure_s": round(alone[main] * STEP_S, 2),
                    "other_s": round((sum(alone) - alone[main]) * STEP_S, 2),
                    "overlap_s": round(int((count >= 2).sum()) * STEP_S, 2),
                    "test_overlap_s": round(int(inserted[frames].sum()) * STEP_S, 2),
                    "silence_s": round(int((count == 0).sum()) * STEP_S, 2)}
    return out


def window_similarities(purity, audio: np.ndarray, spans: dict, truth: np.ndarray, inserted: np.ndarray) -> list:
    """(kind, similarity to the own centroid, to the closest other talker's centroid) of every purity window of
    ``spans``; kind: "test" (centre in the inserted overlap), "overlap", "clean" (one true talker) or "silence".
    Centroids as the filter estimates them."""
    embedded, centroids = {}, {}
    for spk, items in spans.items():
        pairs = purity.windows(items)
        if not pairs:
            continue
        emb = purity.embed(audio, [w for w, _ in pairs])
        embedded[spk], centroids[spk] = (pairs, emb), purity.judge(emb)[0]
    count = truth.sum(0)
    out = []
    for spk, (pairs, emb) in embedded.items():
        others = [c for o, c in centroids.items() if o != spk]
        own = emb @ centroids[spk]
        other = np.max([emb @ c for c in others], axis=0) if others else np.zeros(len(own))
        for ((w0, w1), _), so, sx in zip(pairs, own, other, strict=True):
            frame = min(int((w0 + w1) / 2 / STEP_S), truth.shape[1] - 1)
            kind = "test" if inserted[frame] else ("overlap" if count[frame] >= 2 else
                                                   "clean" if count[frame] == 1 else "silence")
            out.append((kind, float(so), float(sx)))
    return out


def similarity_table(rows: list, min_similarity: float) -> dict:
    """Percentiles (10/50/90) of the similarities per kind of window, and what a margin rule (own - other >= m)
    would drop among the windows the filter keeps."""
    table = {}
    for kind in ("clean", "overlap", "test"):
        own = np.array([r[1] for r in rows if r[0] == kind])
        other = np.array([r[2] for r in rows if r[0] == kind])
        if own.size:
            table[kind] = {"windows": int(own.size),
                           "own_p10_50_90": np.percentile(own, [10, 50, 90]).round(3).tolist(),
                           "other_p10_50_90": np.percentile(other, [10, 50, 90]).round(3).tolist()}
    kept = [r for r in rows if r[1] >= min_similarity]
    table["margin_rule_drops"] = {
        f"{m:.2f}": {kind: f"{sum(1 for r in kept if r[0] == kind and r[1] - r[2] < m)}/"
                           f"{sum(1 for r in kept if r[0] == kind)}" for kind in ("clean", "test")}
        for m in (0.05, 0.10, 0.15, 0.20)}
    return table


def export_material(path: Path, audio: np.ndarray, kept: dict, tests: list[dict]) -> None:
    """What `rtsep process` adapts on (the filtered spans' speech at the model rate, as AdaptationMaterial.speech
    gives it), the inserted overlap's sources at the model rate, as process_remix.py scores them, and the meeting
    at the model rate with each overlap's first sample in it."""
    import soxr

    from rtsep.separate.adapt import gather_speech

    model_rate = 8000
    meeting = soxr.resample(audio, RATE_HZ, model_rate).astype(np.float32)
    speech = gather_speech(meeting, model_rate, kept)
    sources = [np.stack([soxr.resample(s, RATE_HZ, model_rate) for s in t["sources"]]).astype(np.float32)
               for t in tests]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"speech/{k}": v for k, v in speech.items()}, test_sources=np.stack(sources),
             snr_db=np.array([t["snr_db"] for t in tests]), meeting=meeting,
             test_start=np.array([t["start"] * model_rate // RATE_HZ for t in tests]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("/tmp/rtsep-purity"))
    p.add_argument("--layout", choices=["conversation-single", "conversation"], default="conversation-single",
                   help="as process_remix.py")
    p.add_argument("--filter", action="store_true", help="also pass the spans through rtsep.separate.purity")
    p.add_argument("--min-similarity", type=float, default=None, help="the filter's threshold (default: rtsep's)")
    p.add_argument("--min-periodicity", type=float, default=None,
                   help="the filter's min_periodic_share (default: rtsep's; 0: off)")
    p.add_argument("--min-turn", type=float, default=None, help="single_talker_spans' min_turn_s (default: rtsep's)")
    p.add_argument("--edge-trim", type=float, default=None, help="single_talker_spans' edge_trim_s (default: rtsep's)")
    p.add_argument("--min-window", type=float, default=None, help="the filter's min_window_s (default: rtsep's)")
    p.add_argument("--similarities", action="store_true",
                   help="with --filter: how the windows' similarities differ between clean speech and overlaps")
    p.add_argument("--export-material", type=Path, default=None,
                   help="with --filter: write DIR/<meeting>.npz, the adaptation's speech as the product gets "
                        "it (8 kHz, filtered) and the test overlap's sources, for adapt.py --material")
    args = p.parse_args()
    meetings = [(f"fold{f}", f, SNRS_DB) for f in range(args.folds)]
    if args.layout == "conversation-single":
        meetings = [(f"fold{f}_{snr:+.0f}dB", f, (snr,)) for f in range(args.folds) for snr in SNRS_DB]
    rows, similarities = [], []
    span_options = {k: v for k, v in (("min_turn_s", args.min_turn), ("edge_trim_s", args.edge_trim)) if v is not None}
    for name, fold, snrs in meetings:
        audio, truth, tests, inserted, spans = diarized_meeting(args.out / name, args.folds, fold, snrs, **span_options)
        row = {"meeting": name, "spans": composition(spans, truth, inserted)}
        if args.filter:
            given = {"min_similarity": args.min_similarity, "min_periodic_share": args.min_periodicity,
                     "min_window_s": args.min_window}
            config = PurityConfig(**{k: v for k, v in given.items() if v is not None})
            purity = PurityFilter(config)
            kept = purity.filter(audio, RATE_HZ, spans)
            row["filtered"] = composition(kept, truth, inserted)
            if args.similarities:
                similarities += window_similarities(purity, audio, spans, truth, inserted)
            if args.export_material is not None:
                export_material(args.export_material / f"{name}.npz", audio, kept, tests)
        print(json.dumps(row), flush=True)
        rows.append(row)
    columns = ("pure_s", "other_s", "overlap_s", "test_overlap_s", "silence_s")
    totals = {key: {k: round(sum(v[k] for r in rows for v in r[key].values()), 1) for k in columns}
              for key in rows[0] if key != "meeting"}
    print(json.dumps({"meetings": len(rows), "total": totals}))
    if similarities:
        threshold = PurityConfig().min_similarity if args.min_similarity is None else args.min_similarity
        print(json.dumps({"similarities": similarity_table(similarities, threshold)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
