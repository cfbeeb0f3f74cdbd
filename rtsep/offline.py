"""Settings of ``rtsep process`` alone (section ``[offline]``), read by the composition root (rtsep.compose).

They only apply when the whole file is at hand and nothing else runs: live sessions never read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class OfflineConfig:
    # torch threads on the CPU while the separator adapts: nothing else of rtsep runs then; 0: one per core left
    # idle by the rest of the machine when `rtsep process` starts (rtsep.compose.free_cores), at least 1
    adapt_threads: int = 0
    # compile the adaptation's training step (torch.compile; plain steps when compiling fails): fewer CPU seconds
    # per step once compiled (0.26 against 0.63 s on one core), but the compile itself takes ~17 s with inductor's
    # cache warm and ~95 s on a fresh machine, more than a budgeted adaptation of a short file lasts: off by
    # default, worth it for the long fixed recipe. Live sessions adapt uncompiled
    adapt_compile: bool = False
    # the adaptation's time budget: this many seconds (wall, compile included) per second of the file, at most
    # adapt_budget_max_s; the steps are planned from the first steps' measured time, [adaptation] steps is their
    # ceiling (rtsep.separate.budget). 0: no budget, run [adaptation] steps (the fixed recipe)
    adapt_budget_rtf: float = 0.4
    adapt_budget_max_s: float = 45.0  # 0: no cap
    # when the budget affords fewer steps than this, the file is separated by the checkpoint as shipped
    adapt_min_steps: int = 20
    # stop adapting when the running mean of the training SI-SNR has not improved for this many steps (0: never)
    adapt_patience_steps: int = 100
    # with adaptation: separate the file up to this many times at playback speeds spread over the adaptation's
    # speed perturbation, and average (rtsep.separate.ensemble): the members' errors differ, their mean is closer
    # to the sources; each member costs one more causal pass over the file; 1: one pass
    ensemble: int = 10
    # the passes' time budget, seconds per second of the file: the first pass is timed and the ensemble has the
    # largest odd size that fits (at most `ensemble`). 0: always `ensemble` passes
    ensemble_budget_rtf: float = 0.05
    # with adaptation: re-estimate the (averaged) sources from the file by a Wiener filter with their power spectra
    # (rtsep.separate.postfilter), so that the sources add up to the recording. It needs the whole file (not
    # causal), so live tracks cannot use it; without adaptation it made the sources worse (docs/models.md)
    wiener: bool = True

    def __post_init__(self) -> None:
        if self.adapt_threads < 0:
            raise ConfigError(f"[offline] adapt_threads must be >= 0, got {self.adapt_threads}")
        if self.ensemble < 1:
            raise ConfigError(f"[offline] ensemble must be >= 1, got {self.ensemble}")
        for name in ("adapt_budget_rtf", "adapt_budget_max_s", "ensemble_budget_rtf"):
            if not getattr(self, name) >= 0:  # also refuses NaN
                raise ConfigError(f"[offline] {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("adapt_min_steps", "adapt_patience_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[offline] {name} must be >= 0, got {getattr(self, name)}")

    def budget(self) -> Any:
        """The separator's per-file budgets (rtsep.separate.budget.FileBudget; imported here: the rtsep.separate
        package loads torch, and the configuration loads without it)."""
        from rtsep.separate.budget import FileBudget

        return FileBudget(adapt_rtf=self.adapt_budget_rtf, adapt_max_s=self.adapt_budget_max_s,
                          min_steps=self.adapt_min_steps, ensemble_rtf=self.ensemble_budget_rtf)
