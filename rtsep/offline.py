"""Settings of ``rtsep process`` alone (section ``[offline]``), read by the composition root (rtsep.compose).

They only apply when the whole file is at hand and nothing else runs: live sessions never read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class OfflineConfig:
    # torch threads on the CPU while the separator adapts: nothing else runs then; 0: one per core
    adapt_threads: int = 0
    # compile the adaptation's training step (torch.compile; plain steps when compiling fails): fewer CPU seconds
    # per step once compiled, and inductor's on-disk cache makes later runs start fast. Live sessions adapt
    # uncompiled: a compile beside live inference would take a core away for its duration
    adapt_compile: bool = True
    # with adaptation: separate the file this many times at playback speeds spread over the adaptation's speed
    # perturbation, and average (rtsep.separate.ensemble): the members' errors differ, their mean is closer to the
    # sources; each member costs one more causal pass over the file; 1: one pass
    ensemble: int = 10
    # with adaptation: re-estimate the (averaged) sources from the file by a Wiener filter with their power spectra
    # (rtsep.separate.postfilter), so that the sources add up to the recording. It needs the whole file (not
    # causal), so live tracks cannot use it; without adaptation it made the sources worse (docs/models.md)
    wiener: bool = True

    def __post_init__(self) -> None:
        if self.adapt_threads < 0:
            raise ConfigError(f"[offline] adapt_threads must be >= 0, got {self.adapt_threads}")
        if self.ensemble < 1:
            raise ConfigError(f"[offline] ensemble must be >= 1, got {self.ensemble}")
