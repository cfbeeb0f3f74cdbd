"""Model specifications: what the streaming engine derives its buffer sizes and latency from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What a streaming model declares about itself (cf. pyannote's ``Specifications``).

    ``step_samples``: how many new samples each streaming call consumes.
    ``lookahead_samples``: how many future samples the model waits for before it decides.
    """

    name: str
    sample_rate_hz: int
    step_samples: int
    lookahead_samples: int = 0
    num_outputs: int = 1

    @property
    def algorithmic_latency_s(self) -> float:
        """Delay from a sample's arrival to the earliest output that covers it (worst case)."""
        return (self.step_samples + self.lookahead_samples) / self.sample_rate_hz
