"""Same-voice vs different-voice similarity of enrolled voices to session speakers, on real recorded voices that
are not the pyannote sample: the actors of the real-voice corpus (training/corpus.py; split by actor in
training/splits.json). Chooses the matcher's ``[voices] min_similarity`` on the development actors (the corpus's
train + valid splits: the speaker encoder, resemblyzer's, was trained on none of them, and no setting of the
matcher was trained on anything) and reports the chosen threshold's error rates on the test actors.

For each actor: an enrollment clip from its first utterances (``--enroll-s`` of audio, through
rtsep.diarize.voices exactly as ``POST /v1/voices`` does), then up to ``--sessions`` disjoint later stretches of
``--session-s`` each, embedded as a session's speaker centroid is (1 s windows of its speech, averaged) -- dry, and
through one of the corpus's room impulse responses (a meeting microphone; the enrollment stays dry). The corpus
is 8 kHz (telephone band), resampled to 16 kHz for the encoder: similarities of full-band audio are higher.

    python -m bench.voice_match [--corpus /work/runs/real/corpus] [--enroll-s 10] [--session-s 20] [--sessions 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soxr

from bench.common import machine_note
from rtsep.diarize.embedding import load_speaker_encoder
from rtsep.diarize.online import DiarizationConfig
from rtsep.diarize.vad import load_silero_vad
from rtsep.diarize.voices import embed_speech, enrollment_embedding, speech_of
from rtsep.errors import BadEnrollment

CORPUS_RATE_HZ = 8000
FULL_BAND_RATE_HZ = 16000


def stretches(utterances, rate: int, first_s: float, each_s: float, count: int) -> list[np.ndarray]:
    """Whole utterances (float32, in order): the first ones up to ``first_s``, then ``count`` disjoint runs of
    ``each_s`` each."""
    out, current, target = [], [], first_s
    for utterance in utterances:
        current.append(utterance)
        if sum(len(c) for c in current) >= target * rate:
            out.append(np.concatenate(current))
            current, target = [], each_s
            if len(out) == count + 1:
                break
    if current and len(out) <= count and sum(len(c) for c in current) >= target * rate / 2:
        out.append(np.concatenate(current))  # a last, shorter stretch (at least half as long)
    return out


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    samples = np.ascontiguousarray(samples, np.float32)
    return samples if rate == 16000 else soxr.resample(samples, rate, 16000).astype(np.float32)


def corpus_utterances(corpus: Path, speaker: str, info: dict):
    audio = np.load(corpus / f"{speaker}.npy", mmap_mode="r")
    for a, b in zip(info["offsets"][:-1], info["offsets"][1:], strict=True):
        yield np.asarray(audio[a:b], np.float32) / 32768


def source_utterances(clips: list[Path]):
    """The same actors' clips decoded from the Debian packages at 16 kHz (as training.corpus prepares them, but
    full band): trimmed of silence, peak-normalised."""
    from training.voices import decode, normalise_peak, trim_silence

    for path in clips:
        audio = normalise_peak(trim_silence(decode(path, FULL_BAND_RATE_HZ), FULL_BAND_RATE_HZ))
        if len(audio) >= 0.3 * FULL_BAND_RATE_HZ:
            yield audio


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="/work/runs/real/corpus")
    parser.add_argument("--enroll-s", type=float, default=10.0)
    parser.add_argument("--session-s", type=float, default=20.0)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--max-false-accept", type=float, default=0.01,
                        help="choose the lowest threshold whose development false-accept rate is at most this")
    parser.add_argument("--json", help="write every similarity here")
    parser.add_argument("--full-band", action="store_true",
                        help="decode the same actors' clips from the Debian packages at 16 kHz instead of the 8 kHz "
                             "corpus (the corpus still gives the splits and the room responses)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    corpus = Path(args.corpus)
    index = json.loads((corpus / "index.json").read_text())
    rate = FULL_BAND_RATE_HZ if args.full_band else CORPUS_RATE_HZ
    rirs = np.load(corpus / "rirs.npz")["rirs"]
    if rate != CORPUS_RATE_HZ:
        rirs = soxr.resample(rirs[:, 0].T.astype(np.float32), CORPUS_RATE_HZ, rate).T[:, None, :]
    plan = {}
    if args.full_band:
        from training.corpus import load_splits, plan_speakers

        plan = plan_speakers(load_splits())
    rng = np.random.default_rng(0)
    vad, encoder = load_silero_vad(), load_speaker_encoder()
    window = DiarizationConfig().embedding_window_samples
    enrolled: dict[str, np.ndarray] = {}
    sessions: dict[str, list[tuple[str, np.ndarray]]] = {}
    split_of: dict[str, str] = {}
    refused: list[str] = []
    for speaker, info in sorted(index.items()):
        utterances = (source_utterances(plan[speaker]["clips"]) if args.full_band
                      else corpus_utterances(corpus, speaker, info))
        parts = stretches(utterances, rate, args.enroll_s, args.session_s, args.sessions)
        if len(parts) < 2:
            print(f"{speaker}: too little audio, left out", file=sys.stderr)
            continue
        up = [to_16k(p, rate) for p in parts]
        try:
            enrolled[speaker], _ = enrollment_embedding(up[0], vad, encoder, window_samples=window, min_speech_s=3.0)
        except BadEnrollment as exc:  # as POST /v1/voices would answer
            refused.append(speaker)
            print(f"{speaker}: enrollment refused: {exc.message}", file=sys.stderr)
            continue
        split_of[speaker] = "test" if info["split"] == "test" else "dev"
        sessions[speaker] = []
        for k, part in enumerate(parts[1:]):
            rir = rirs[rng.integers(len(rirs)), 0]
            wet = np.convolve(part, rir)[: len(part)]
            wet = (wet / max(float(np.abs(wet).max()), 1e-6) * 0.9).astype(np.float32)
            for condition, signal in (("dry", part), ("room", wet)):
                x = to_16k(signal, rate)
                speech = speech_of(x, vad)
                if speech.size >= window:
                    sessions[speaker].append((condition, embed_speech(speech, encoder, window)))
        print(f"{speaker:20s} {split_of[speaker]:4s} {len(sessions[speaker])} session centroids", file=sys.stderr)
    pairs: dict[str, dict[str, list[float]]] = {}
    for enrolled_speaker, voice in enrolled.items():
        for speaker, items in sessions.items():
            if split_of[speaker] != split_of[enrolled_speaker]:
                continue  # never compare across the dev / test split
            for condition, centroid in items:
                kind = "same" if speaker == enrolled_speaker else "different"
                group = pairs.setdefault(f"{split_of[speaker]}/{condition}", {"same": [], "different": []})
                group[kind].append(float(voice @ centroid))
    dev_same = np.array(pairs["dev/dry"]["same"] + pairs["dev/room"]["same"])
    dev_diff = np.array(pairs["dev/dry"]["different"] + pairs["dev/room"]["different"])
    grid = np.round(np.arange(0.30, 0.99, 0.01), 2)
    chosen = next((float(t) for t in grid if np.mean(dev_diff >= t) <= args.max_false_accept), float(grid[-1]))
    eer_t = float(grid[np.argmin([abs(np.mean(dev_diff >= t) - np.mean(dev_same < t)) for t in grid])])
    print(machine_note())
    print(f"audio: {'the Debian clips at 16 kHz (full band)' if args.full_band else 'the 8 kHz corpus'}")
    counts = {k: sum(s == k for s in split_of.values()) for k in ("dev", "test")}
    print(f"actors: dev {counts['dev']}, test {counts['test']}"
          f"; enrollment {args.enroll_s:g} s of audio, session stretches {args.session_s:g} s")
    print(f"enrollment refused (too little speech found by silero-vad): {', '.join(refused) or 'none'}")
    print(f"chosen on dev: min_similarity {chosen:.2f} (lowest with false accepts <= {args.max_false_accept:.0%}); "
          f"dev equal-error threshold {eer_t:.2f}")
    print("set        pairs same/diff  same: p5 / median   diff: median / p95 / max   "
          f"at {chosen:.2f}: false reject  false accept")
    for name in sorted(pairs):
        same, diff = np.array(pairs[name]["same"]), np.array(pairs[name]["different"])
        print(f"{name:10s} {len(same):5d} / {len(diff):5d}     {np.percentile(same, 5):.3f} / {np.median(same):.3f}"
              f"       {np.median(diff):.3f} / {np.percentile(diff, 95):.3f} / {diff.max():.3f}"
              f"          {np.mean(same < chosen):6.1%}        {np.mean(diff >= chosen):6.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"chosen": chosen, "eer_threshold": eer_t, "pairs": pairs}))


if __name__ == "__main__":
    main()
