"""Scale-invariant SDR and its permutation-invariant form (training loss and evaluation metric)."""

from __future__ import annotations

import itertools

import numpy as np
import torch


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """SI-SDR in dB over the last axis (both zero-meaned first), broadcasting leading axes."""
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def pit_si_sdr(estimates: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best mean SI-SDR over source permutations. estimates, references: (B, C, T).

    Returns (per-item mean SI-SDR of the best permutation (B,), the best permutation index (B,))."""
    sources = references.shape[1]
    pair = si_sdr(estimates.unsqueeze(2), references.unsqueeze(1))  # (B, C_est, C_ref)
    perms = list(itertools.permutations(range(sources)))
    scores = torch.stack([pair[:, list(p), list(range(sources))].mean(-1) for p in perms], dim=1)  # (B, P)
    best, index = scores.max(dim=1)
    return best, index


def pit_si_snr_loss(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Negative permutation-invariant SI-SNR, averaged over the batch."""
    best, _ = pit_si_sdr(estimates, references)
    return -best.mean()


def si_sdr_np(estimate: np.ndarray, reference: np.ndarray) -> float:
    as64 = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    return float(si_sdr(as64(estimate), as64(reference)))


def pit_si_sdr_improvement(mixture: np.ndarray, estimates: np.ndarray, references: np.ndarray) -> tuple[float, float]:
    """(SI-SDR of the best permutation, its improvement over the unprocessed mixture), averaged over sources."""
    est = torch.from_numpy(np.asarray(estimates, np.float64))[None]
    ref = torch.from_numpy(np.asarray(references, np.float64))[None]
    best, _ = pit_si_sdr(est, ref)
    mix = torch.from_numpy(np.asarray(mixture, np.float64))
    base = si_sdr(mix.expand_as(ref[0]), ref[0]).mean()
    return float(best[0]), float(best[0] - base)
