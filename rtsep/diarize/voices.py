"""The embedding of an enrollment clip (a named speaker's voice), with the diarizer's own models.

decode (soundfile: wav / flac / ogg) -> mono -> 16 kHz (soxr) -> the speech only (silero-vad, the diarizer's onset)
-> the diarizer's speaker encoder over windows of that speech as long as the session's (1 s, half overlapping)
-> the mean of the window embeddings, as a unit vector. The clip itself is never kept.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from rtsep.diarize.embedding import EMBEDDING_SAMPLE_RATE_HZ
from rtsep.diarize.vad import VAD_CONTEXT_SAMPLES, VAD_FRAME_SAMPLES, VAD_HIDDEN
from rtsep.errors import BadEnrollment

WINDOW_BATCH = 32


def decode_clip(data: bytes, max_s: float) -> np.ndarray:
    """Audio file bytes -> mono float32 at 16 kHz; BadEnrollment for anything soundfile cannot decode."""
    import soundfile as sf
    import soxr

    if not data:
        raise BadEnrollment("the enrollment audio is empty: send a wav, flac or ogg file as the body")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = int(f.samplerate)
            if f.frames > max_s * rate:
                raise BadEnrollment(f"the enrollment clip lasts {f.frames / rate:.1f} s; at most {max_s:g} s")
            samples = f.read(dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError) as exc:
        raise BadEnrollment(f"cannot decode the enrollment audio (wav, flac or ogg): {exc}") from None
    mono = samples.mean(axis=1, dtype=np.float32)
    if rate != EMBEDDING_SAMPLE_RATE_HZ and mono.size:
        mono = soxr.resample(mono, rate, EMBEDDING_SAMPLE_RATE_HZ).astype(np.float32)
    return np.ascontiguousarray(mono)


@torch.inference_mode()
def speech_of(samples: np.ndarray, vad: torch.nn.Module, onset: float = 0.5) -> np.ndarray:
    """The 32 ms frames silero-vad calls speech (probability >= ``onset``), concatenated."""
    frames = samples.size // VAD_FRAME_SAMPLES
    if frames == 0:
        return np.zeros(0, np.float32)
    device = next(vad.parameters()).device
    x = torch.from_numpy(samples[: frames * VAD_FRAME_SAMPLES]).to(device).unsqueeze(0)
    context = torch.zeros(1, VAD_CONTEXT_SAMPLES, device=device)
    state = torch.zeros(2, 1, VAD_HIDDEN, device=device)
    probs, _, _ = vad(x, context, state)
    keep = probs[0].float().cpu().numpy() >= onset
    return samples[: frames * VAD_FRAME_SAMPLES].reshape(frames, VAD_FRAME_SAMPLES)[keep].reshape(-1)


@torch.inference_mode()
def embed_speech(speech: np.ndarray, encoder: torch.nn.Module, window_samples: int) -> np.ndarray:
    """Unit mean of the encoder's embeddings of ``window_samples`` windows of ``speech``, hop half a window."""
    hop = max(1, window_samples // 2)
    starts = list(range(0, max(1, speech.size - window_samples + 1), hop))
    windows = np.zeros((len(starts), window_samples), np.float32)
    for i, start in enumerate(starts):
        piece = speech[start:start + window_samples]
        windows[i, :piece.size] = piece
    device = next(encoder.parameters()).device
    parts = [encoder(torch.from_numpy(windows[i:i + WINDOW_BATCH]).to(device)).float().cpu().numpy()
             for i in range(0, len(windows), WINDOW_BATCH)]
    mean = np.concatenate(parts).mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)


def enrollment_embedding(samples_16k: np.ndarray, vad: torch.nn.Module, encoder: torch.nn.Module, *,
                         window_samples: int, min_speech_s: float, vad_onset: float = 0.5) -> tuple[np.ndarray, float]:
    """(unit embedding, seconds of speech used) of a 16 kHz clip; BadEnrollment if it holds too little speech."""
    speech = speech_of(np.ascontiguousarray(samples_16k, np.float32), vad, vad_onset)
    speech_s = speech.size / EMBEDDING_SAMPLE_RATE_HZ
    if speech_s < min_speech_s:
        raise BadEnrollment(f"the enrollment clip holds {speech_s:.1f} s of speech; at least {min_speech_s:g} s "
                            "are needed (one talker, little noise)", error_code="too_little_speech")
    return embed_speech(speech, encoder, window_samples), round(speech_s, 3)
