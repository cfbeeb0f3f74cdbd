"""The settings a live session reads (section ``[pipeline]``, with ``[diarization]``, ``[runtime]``, ``[separator]``,
``[adaptation]``, ``[tracks]``, ``[attribution]`` and ``[denoise]`` as its parts). ``rtsep process``'s own settings are
rtsep.offline.OfflineConfig.

The session itself is rtsep.stream.core.SessionCore (its behaviour) driven by rtsep.driver.SessionDriver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtsep.diarize.online import DiarizationConfig
from rtsep.enhance.config import DenoiseConfig
from rtsep.errors import ConfigError
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.separate.config import AdaptationConfig, SeparatorConfig
from rtsep.stream.attribution import AttributionConfig
from rtsep.stream.naming import VoicesConfig
from rtsep.stream.render import TracksConfig
from rtsep.stream.session import StreamConfig


@dataclass(frozen=True)
class PipelineConfig:
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    separator: SeparatorConfig = field(default_factory=SeparatorConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    tracks: TracksConfig = field(default_factory=TracksConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    voices: VoicesConfig = field(default_factory=VoicesConfig)
    max_speakers: int = 8  # a client may ask for fewer, never more
    stats_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_speakers < 1:
            raise ConfigError(f"[pipeline] max_speakers must be >= 1, got {self.max_speakers}")
        if not self.stats_interval_s > 0:
            raise ConfigError(f"[pipeline] stats_interval_s must be > 0, got {self.stats_interval_s!r}")

    def adapt_recipe(self, live: bool = False) -> tuple[int, int]:
        """(steps, batch size) of the in-session adaptation on this pipeline's device (AdaptationConfig.recipe)."""
        return self.adaptation.recipe(self.runtime.device, live)

    def purity_config(self) -> Any:
        return self.adaptation.purity_config()

    def stream_config(self, max_message_bytes: int) -> StreamConfig:
        """The input machine's settings: with ``--denoise`` it cuts blocks for the denoiser (the driver re-assembles
        the steps), otherwise the diarizer's steps, and with a separator it also hands on the input as it arrives."""
        step = self.denoise.block_samples if self.denoise.enabled else self.diarization.step_samples
        return StreamConfig(
            model_sample_rate_hz=self.diarization.sample_rate_hz,
            step_samples=step,
            max_message_bytes=max_message_bytes,
            # the separator hears the input as it arrives (with --denoise the blocks are short already)
            emit_samples=self.separator.name is not None and not self.denoise.enabled,
        )
