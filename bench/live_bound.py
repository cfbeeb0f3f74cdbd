"""How far better clustering could take the live timeline with the embeddings it has (issue 18's live DER).

    python -m bench.live_bound --meetings /work/runs/meetings/dev --cache /work/runs/live-replay/dev \
        [--radius 0 4] [--causal] [--limit N]

Over a split captured by ``bench.live_replay capture``, the live rule (``OnlineDiarizer``: its VAD hysteresis,
turns and hangover, labels at the step) is fed labels for its step embeddings from another clustering than its
online one, and its live timeline is scored as ``bench.live_replay`` scores it:

* ``hindsight``: every step embedding of the session clustered at once as the final timeline clusters them
  (``rtsep.diarize.offline.recluster``, spectral, each embedding averaged with those ``radius`` steps either side).
  Not causal: a bound on what any online clustering of these embeddings could reach with the live rule (at
  radius 0; a larger radius also borrows future embeddings, as a look-ahead would).
* ``causal`` (``--causal``): at every embedding, the embeddings so far clustered afresh (average linkage while
  fewer than ``--spectral-min`` are trusted, then spectral), the new one labelled by its cluster, the clusters
  mapped to the labels given so far (Hungarian on shared embeddings). Causal, and slow (one clustering a step).

If the hindsight bound is far from a target, clustering cannot reach it: the embeddings are the limit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.live_replay import load_steps, score
from rtsep.diarize.online import DiarizationConfig, OnlineDiarizer, SegmentClosed, StepAnalysis

_TRUSTED_RATIO = 0.4  # ClusteringConfig.min_speech_ratio_update: windows with less speech are not clustered


class _GivenLabels:
    """Stands in for OnlineClustering: answers each embedding with the next of a list of labels."""

    def __init__(self, labels: list[int]) -> None:
        self._labels = iter(labels)
        self.num_speakers = 0

    def assign(self, embedding: np.ndarray, speech_ratio: float, step_index: int | None = None) -> int:
        label = next(self._labels)
        self.num_speakers = max(self.num_speakers, label + 1)
        return label


class _CausalReclustering:
    """At each embedding, everything so far clustered afresh; the labels given so far are kept by matching."""

    def __init__(self, spectral_min: int) -> None:
        self._embs: list[np.ndarray] = []
        self._ratios: list[float] = []
        self._labels: list[int] = []
        self._spectral_min = spectral_min
        self.num_speakers = 0

    def assign(self, embedding: np.ndarray, speech_ratio: float, step_index: int | None = None) -> int:
        from scipy.optimize import linear_sum_assignment

        from rtsep.diarize.offline import recluster

        self._embs.append(embedding / max(float(np.linalg.norm(embedding)), 1e-8))
        self._ratios.append(speech_ratio)
        now = len(self._embs) - 1
        idx = [i for i, r in enumerate(self._ratios) if r >= _TRUSTED_RATIO or i == now]
        if len(idx) < 6:
            label = self._labels[-1] if self._labels else 0
        else:
            spectral = len(idx) >= self._spectral_min
            ids = recluster(np.stack([self._embs[i] for i in idx]), 0.32, 20, 12 if spectral else 3,
                            "spectral" if spectral else "ahc", 0.15, 36)
            shared = np.zeros((int(ids.max()) + 1, max(self.num_speakers, 1)))
            for cluster, i in zip(ids, idx):
                if i < now:
                    shared[cluster, self._labels[i]] += 1
            rows, cols = linear_sum_assignment(-shared)
            mapping = {int(r): int(c) for r, c in zip(rows, cols) if shared[r, c] > 0}
            for cluster in range(shared.shape[0]):
                if cluster not in mapping:  # a talker not labelled before: a new speaker
                    mapping[cluster] = self.num_speakers
                    self.num_speakers += 1
            for cluster, i in zip(ids, idx):
                if i < now:
                    self._labels[i] = mapping[int(cluster)]
            label = mapping[int(ids[-1])]
        self._labels.append(label)
        self.num_speakers = max(self.num_speakers, label + 1)
        return label


def hindsight_labels(steps: list[StepAnalysis], radius_steps: int) -> list[int]:
    """Each step embedding's cluster with the whole session in view (numbered by first appearance)."""
    from rtsep.diarize.offline import average_neighbours, recluster

    with_emb = [s for s in steps if s.embedding is not None]
    unit = average_neighbours(np.stack([s.embedding for s in with_emb]),
                              np.array([s.step_index for s in with_emb]), radius_steps)
    ids = recluster(unit, 0.32, 20, 12, "spectral", 0.15, 36)
    order: dict[int, int] = {}
    return [order.setdefault(int(c), len(order)) for c in ids]


def live_timeline(steps: list[StepAnalysis], config: DiarizationConfig, clustering) -> list[tuple[int, int, int]]:
    diarizer = OnlineDiarizer(config)
    diarizer.clustering = clustering
    events = [e for s in steps for e in diarizer.push(s)] + diarizer.finish()
    return [(e.start_sample, e.end_sample, e.speaker) for e in events if isinstance(e, SegmentClosed)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_bound", description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path, help="a bench.live_replay capture of the split")
    parser.add_argument("--radius", type=int, nargs="*", default=[0, 4], help="hindsight: averaging radii (steps)")
    parser.add_argument("--causal", action="store_true", help="also the causal re-clustering (slow)")
    parser.add_argument("--spectral-min", type=int, default=80)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    from rtsep.config import load_config

    config = load_config(None, env={}).pipeline.diarization
    ids = [m["id"] for m in json.loads((args.meetings / "index.json").read_text())["meetings"][: args.limit]]
    steps = {mid: load_steps(args.cache / f"{mid}.npz") for mid in ids}
    runs: list[tuple[str, dict]] = []
    for radius in args.radius:
        runs.append((f"hindsight, radius {radius}", {mid: live_timeline(steps[mid], config, _GivenLabels(
            hindsight_labels(steps[mid], radius))) for mid in ids}))
    if args.causal:
        runs.append(("causal re-clustering", {mid: live_timeline(steps[mid], config,
                                                                 _CausalReclustering(args.spectral_min))
                                              for mid in ids}))
    for name, timelines in runs:
        total = score(args.meetings, ids, timelines, config.sample_rate_hz)["total"]
        print(json.dumps({"labels": name, "meetings": len(ids), **{k: round(100 * total[k], 1) for k in
                                                                    ("der", "missed", "false_alarm", "confusion")}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
