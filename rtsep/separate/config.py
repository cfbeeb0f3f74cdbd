"""The separator's settings and its in-session adaptation's settings (sections ``[separator]`` and ``[adaptation]``).

Plain frozen dataclasses without torch, so that the configuration loads without the models. The offline-only
settings of ``rtsep process`` (threads, compile, ensemble, post-filter) are rtsep.offline.OfflineConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class SeparatorConfig:
    # a registered separator (rtsep.separate.base); None ("none"): no separation, each speaker's track carries the
    # input while that speaker talks
    name: str | None = "convtasnet"
    checkpoint: str | None = None  # convtasnet: a checkpoint file (None: the shipped one)
    dir: str | None = None  # sepformer: SpeechBrain's on-disk model directory
    # convtasnet: its layer norms pool a recent window rather than the whole session, so that a long session's
    # statistics do not drift from those of the short segments it was trained on (0: the whole session)
    norm_memory_s: float = 16.0
    # convtasnet: how much input each streaming call takes (rounded down to its 2 ms hop). A separated frame leaves
    # about one step after its first sample arrived: 0.1 s keeps one session at RTF < 0.1 on one core and batches
    # well; 0.02 s is the low-latency setting (separated frames within ~0.05 s) at ~4x the CPU per session
    # (bench/RESULTS.md "Separated frames on time")
    step_s: float = 0.1
    # the inference worker starts a tick no earlier than this after the oldest waiting step arrived, so that the
    # steps of many sessions, which arrive a few ms apart, share one forward instead of running as many tiny batches
    # (rtsep.runtime.worker); it adds at most this to separated frames: the low-latency setting sets 0
    # (bench/RESULTS.md "Capacity with separation on")
    gather_s: float = 0.05
    # convtasnet: the shared model's batches run as one TorchScript graph (traced at start-up, exact) rather than as
    # ~2,900 small torch calls from Python that each wait for the GIL while the event loop runs: the difference
    # between holding 16 live sessions on 2 cores and not (bench/RESULTS.md "16 live sessions with separation on")
    traced: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.name, str) and self.name.strip().lower() in ("", "none", "off"):
            object.__setattr__(self, "name", None)  # `--separator none`: route the input by speaker
        if not self.norm_memory_s >= 0:
            raise ConfigError(f"[separator] norm_memory_s must be >= 0, got {self.norm_memory_s!r}")
        if not 0 < self.step_s <= 2.0:
            raise ConfigError(f"[separator] step_s must be within (0, 2] s, got {self.step_s!r}")
        if not 0 <= self.gather_s <= 1.0:
            raise ConfigError(f"[separator] gather_s must be within [0, 1] s, got {self.gather_s!r}")

    def options(self) -> dict[str, Any]:
        """Keyword arguments of rtsep.separate.base.create_separator for this separator."""
        if self.name == "sepformer":
            return {"separator_dir": self.dir}
        if self.name == "convtasnet":
            return {"checkpoint": self.checkpoint, "norm_memory_s": self.norm_memory_s, "step_s": self.step_s,
                    "traced": self.traced}
        return {}


@dataclass(frozen=True)
class AdaptationConfig:
    """Fine-tuning a copy of the Conv-TasNet on the session's own single-talker turns (rtsep.separate.adapt),
    because the shipped model never heard these talkers. A live session adapts in the background once two talkers
    have ``min_speech_s`` of single-talker speech each (rtsep.stream.adaptation); ``rtsep process`` adapts once
    on the whole file. The measured trade-offs of these settings are in docs/models.md."""

    # steps x remixes per step buy quality with time; None: by device and use (recipe); 0 steps: never adapt
    steps: int | None = None
    batch_size: int | None = None
    live: bool = True  # whether live sessions adapt (`rtsep process` follows steps alone)
    min_speech_s: float = 4.0
    # adapt only on turn windows whose speaker embedding is this similar (cosine) to their talker's: overlaps
    # labelled as one talker's turn would teach the model to keep both voices (rtsep.separate.purity); 0: all turns
    min_similarity: float = 0.82
    # and only on windows where this share of the voiced frames sound like one voice (one pitch:
    # rtsep.separate.periodicity), which catches overlaps an embedding takes for the louder talker; off by
    # default because it also drops clean speech (docs/models.md)
    min_periodicity: float = 0.0
    # live rounds, server-wide: one runs at a time and keeps at most this share of one core's time (it rests between
    # its steps); at most ``max_queued`` rounds wait, a session's newer round replaces its waiting one, and the session
    # with the fewest rounds goes first (rtsep.runtime.adaptation)
    cpu_share: float = 0.5
    max_queued: int = 16
    # and a round waits between its steps while a live step has waited longer than this for the separator's or the
    # diarizer's inference: live steps first. A bound above the gather windows (0.05 s) and a separator step
    # (0.1 s), by reasoning, not tuned on audio; its own effect on capacity was not isolated (the trace is what held
    # 16 sessions: bench/RESULTS.md "16 live sessions with separation on")
    yield_backlog_s: float = 0.15

    def __post_init__(self) -> None:
        if not 0 < self.cpu_share <= 1:
            raise ConfigError(f"[adaptation] cpu_share must be within (0, 1], got {self.cpu_share!r}")
        if not self.yield_backlog_s > 0:
            raise ConfigError(f"[adaptation] yield_backlog_s must be > 0, got {self.yield_backlog_s!r}")
        if self.max_queued < 1:
            raise ConfigError(f"[adaptation] max_queued must be >= 1, got {self.max_queued}")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"[adaptation] steps must be >= 0, got {self.steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"[adaptation] batch_size must be >= 1, got {self.batch_size}")
        if not self.min_speech_s > 0:
            raise ConfigError(f"[adaptation] min_speech_s must be > 0, got {self.min_speech_s!r}")
        for name in ("min_similarity", "min_periodicity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"[adaptation] {name} must be within [0, 1], got {getattr(self, name)!r}")

    def recipe(self, device: str, live: bool = False) -> tuple[int, int]:
        """(steps, batch size): as set, else by device and use. A GPU affords the larger recipe everywhere; on the
        CPU a live session adapts beside its own inference, uncompiled, so it gets fewer steps than `rtsep process`
        (the figures behind these defaults: docs/models.md)."""
        gpu = str(device).startswith("cuda")
        steps = self.steps if self.steps is not None else (600 if gpu else 300 if live else 1000)
        batch = self.batch_size if self.batch_size is not None else (8 if gpu else 4)
        return steps, batch

    def purity_config(self) -> Any:
        """The material's purity filter settings (rtsep.separate.purity.PurityConfig); None when both checks are off."""
        if self.min_similarity <= 0 and self.min_periodicity <= 0:
            return None
        from rtsep.separate.purity import PurityConfig

        return PurityConfig(min_similarity=self.min_similarity, min_periodic_share=self.min_periodicity)
