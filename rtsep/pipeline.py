"""The settings of a session's pipeline (diarization, runtime, separator, adaptation, `rtsep process`).

The session itself is rtsep.stream.core.SessionCore (its behaviour) driven by rtsep.driver.SessionDriver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtsep.diarize.online import DiarizationConfig
from rtsep.errors import ConfigError
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.stream.session import StreamConfig


@dataclass(frozen=True)
class PipelineConfig:
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    max_speakers: int = 8
    stats_interval_s: float = 2.0
    # a registered separator (rtsep.separate); the shipped causal Conv-TasNet by default. None ("none"): no
    # separation, each speaker's track carries the input while that speaker talks
    separator: str | None = "convtasnet"
    separator_checkpoint: str | None = None  # convtasnet: a checkpoint file (default: the shipped one)
    separator_dir: str | None = None  # sepformer: SpeechBrain's on-disk model directory
    # convtasnet: its layer norms pool a recent window rather than the whole session, so that a long session's
    # statistics do not drift from those of the short segments it was trained on (0: the whole session)
    separator_norm_memory_s: float = 16.0
    # convtasnet: fine-tune a copy on the session's own single-talker turns (rtsep.separate.adapt), because the
    # shipped model never heard these talkers; 0 steps: never. `rtsep process` adapts once on the whole file, then
    # separates it; a live session adapts in the background once two talkers have `adapt_min_speech_s` of
    # single-talker speech each (again as that grows, 3 rounds). Steps x remixes per step buy quality with time;
    # None: by device and use (adapt_recipe). The measured trade-off is in docs/models.md
    adapt_steps: int | None = None
    adapt_batch_size: int | None = None
    # `rtsep process` on the CPU: torch threads while it adapts (nothing else runs then); 0: one per core
    adapt_threads: int = 0
    # `rtsep process`: compile the adaptation's training step (torch.compile; plain steps when compiling fails):
    # fewer CPU seconds per step once compiled, and inductor's on-disk cache makes later runs start fast. Live
    # sessions adapt uncompiled: a compile beside live inference would take a core away for its duration
    adapt_compile: bool = True
    adapt_live: bool = True
    adapt_min_speech_s: float = 4.0
    # adapt only on turn windows whose speaker embedding is this similar (cosine) to their talker's: overlaps
    # labelled as one talker's turn would teach the model to keep both voices (rtsep.separate.purity); 0: all turns
    adapt_min_similarity: float = 0.82
    # and only on windows where this share of the voiced frames sound like one voice (periodic at one pitch:
    # rtsep.separate.periodicity), which catches overlaps an embedding takes for the louder talker; 0 (default):
    # off, because it also drops clean speech and cost more than it saved (docs/models.md)
    adapt_min_periodicity: float = 0.0
    # `rtsep process` with adaptation: separate the file this many times, at playback speeds spread over the
    # adaptation's speed perturbation, and average (rtsep.separate.ensemble): the members' errors differ, their
    # mean is closer to the sources; each member costs one more causal pass over the file; 1: one pass
    offline_ensemble: int = 10
    # `rtsep process` with adaptation: re-estimate the (averaged) sources from the file by a Wiener filter with
    # their power spectra (rtsep.separate.postfilter), so that the sources add up to the recording. It needs the
    # whole file (not causal), so live tracks do not use it; without adaptation it made the sources worse
    offline_wiener: bool = True

    def __post_init__(self) -> None:
        steps, batch = self.adapt_recipe()
        if steps < 0 or batch < 1 or self.adapt_threads < 0 or not self.separator_norm_memory_s >= 0:
            raise ConfigError("adapt_steps, adapt_threads and separator_norm_memory_s must be >= 0 and "
                              "adapt_batch_size >= 1")
        if self.offline_ensemble < 1:
            raise ConfigError("offline_ensemble must be >= 1")
        if not 0.0 <= self.adapt_min_periodicity <= 1.0:
            raise ConfigError("adapt_min_periodicity must be within [0, 1]")
        if isinstance(self.separator, str) and self.separator.strip().lower() in ("", "none", "off"):
            object.__setattr__(self, "separator", None)  # `--separator none`: route the input by speaker

    def adapt_recipe(self, live: bool = False) -> tuple[int, int]:
        """(steps, batch size) of the in-session adaptation: as set, else 600 x 8 on a GPU; on the CPU 1000 x 4 for
        `rtsep process` (compiled steps) and 300 x 4 for live sessions (uncompiled, beside the session's inference)."""
        gpu = str(self.runtime.device).startswith("cuda")
        steps = self.adapt_steps if self.adapt_steps is not None else (600 if gpu else 300 if live else 1000)
        batch = self.adapt_batch_size if self.adapt_batch_size is not None else (8 if gpu else 4)
        return steps, batch

    def purity_config(self) -> Any:
        """The adaptation material's purity filter settings (rtsep.separate.purity.PurityConfig), None when both of
        its checks are off."""
        if self.adapt_min_similarity <= 0 and self.adapt_min_periodicity <= 0:
            return None
        from rtsep.separate.purity import PurityConfig

        return PurityConfig(min_similarity=self.adapt_min_similarity, min_periodic_share=self.adapt_min_periodicity)

    def separator_options(self) -> dict[str, Any]:
        if self.separator == "sepformer":
            return {"separator_dir": self.separator_dir}
        if self.separator == "convtasnet":
            return {"checkpoint": self.separator_checkpoint, "norm_memory_s": self.separator_norm_memory_s}
        return {}

    def stream_config(self, max_message_bytes: int) -> StreamConfig:
        return StreamConfig(
            model_sample_rate_hz=self.diarization.sample_rate_hz,
            step_samples=self.diarization.step_samples,
            max_message_bytes=max_message_bytes,
        )
