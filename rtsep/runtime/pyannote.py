"""pyannote.audio models from local checkpoints: the streaming runtime of ``--diarizer pyannote`` and the final
pipeline of ``--final-pipeline``.

Nothing here reaches the network: :func:`offline_mode` sets ``HF_HUB_OFFLINE=1`` (Hugging Face's switch) and
``PYANNOTE_METRICS_ENABLED=false`` (pyannote.audio's telemetry, on by default, which would send a trace per model
load) before pyannote.audio is imported, and only existing local paths are ever handed to it. A missing or
wrong file is a :class:`~rtsep.errors.ModelLoadError` naming the path and what was expected.

:class:`PyannoteDiarizationRuntime` batches, per tick, the buffers of every session's steps through the
segmentation model, then every active local speaker of those buffers through the embedding model (weighted by its
activity, as pyannote's own embedding inference does); the clustering and the timeline are the session's
(rtsep.diarize.pyannote_stream).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtsep.diarize.online import DiarizationConfig
from rtsep.diarize.pyannote_stream import (
    BufferLayout,
    PyannoteStreamConfig,
    PyannoteStreamDiarizer,
    embedding_weights,
)
from rtsep.errors import ConfigError, ModelLoadError
from rtsep.runtime.diarization import DiarizeRequest, RuntimeConfig, resolve_device
from rtsep.runtime.worker import BatchWorker
from rtsep.stream.turns import StepAnalysis

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "pytorch_model.bin"  # what pyannote.audio looks for in a model directory
PIPELINE_NAME = "config.yaml"  # ... and in a pipeline directory


def offline_mode() -> None:
    """No download, no telemetry: set before pyannote.audio (and huggingface_hub) are imported, and on
    huggingface_hub's constants if it was imported already."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def checkpoint_file(path: str | os.PathLike[str], what: str) -> Path:
    """The checkpoint file of ``path`` (a file, or a directory holding pytorch_model.bin), or a clear error."""
    given = Path(path).expanduser()
    if given.is_dir():
        candidate = given / CHECKPOINT_NAME
        if not candidate.is_file():
            raise ModelLoadError(f"{what}: {given} is a directory without {CHECKPOINT_NAME} (expected a pyannote.audio "
                                 "checkpoint file, or a directory holding one)")
        return candidate
    if not given.is_file():
        raise ModelLoadError(f"{what}: {given} does not exist (expected a pyannote.audio checkpoint file, e.g. "
                             f"segmentation-3.0/{CHECKPOINT_NAME})")
    return given


def load_model(path: str | os.PathLike[str], what: str) -> Any:
    """A pyannote.audio ``Model`` from a local checkpoint, in eval mode."""
    file = checkpoint_file(path, what)
    return _from_pretrained("Model", file, f"{what}: cannot load {file} as a pyannote.audio checkpoint").eval()


def _from_pretrained(kind: str, source: Path, failure: str) -> Any:
    """``pyannote.audio.<kind>.from_pretrained(source)`` offline; any failure (unpickling, versions, a wrong config,
    None) is a ModelLoadError that starts with ``failure``."""
    offline_mode()
    try:
        import pyannote.audio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = getattr(pyannote.audio, kind).from_pretrained(str(source))
    except Exception as exc:  # noqa: BLE001 - whatever fails while loading is a load error
        raise ModelLoadError(f"{failure}: {type(exc).__name__}: {exc}") from exc
    if loaded is None:
        raise ModelLoadError(failure)
    return loaded


class SegmentationModel:
    """A pyannote.audio segmentation model: waveforms in, multilabel local-speaker activity out."""

    def __init__(self, model: Any, path: str) -> None:
        try:
            spec = model.specifications
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"segmentation: {path} has no task specifications (not a segmentation model)"
                                 ) from exc
        if isinstance(spec, tuple) or spec.resolution.name != "FRAME" or not spec.classes:
            raise ModelLoadError(f"segmentation: {path} is not a frame-level segmentation model (its specification: "
                                 f"{spec.problem.name}, {spec.resolution.name})")
        self.model = model
        self.powerset = bool(spec.powerset)
        self.num_speakers = len(spec.classes)
        self.sample_rate_hz = int(model.hparams.sample_rate)
        self.duration_s = float(spec.duration)
        self._to_multilabel = None
        if self.powerset:
            from pyannote.audio.utils.powerset import Powerset

            self._to_multilabel = Powerset(self.num_speakers, spec.powerset_max_classes)

    def to(self, device: torch.device) -> SegmentationModel:
        self.model.to(device)
        if self._to_multilabel is not None:
            self._to_multilabel.to(device)
        return self

    def frame_centres_s(self, num_samples: int) -> np.ndarray:
        """Centre of each output frame of a ``num_samples`` buffer, in seconds from its start."""
        num_frames = int(self.model.num_frames(num_samples))
        field = self.model.receptive_field
        return field.start + field.duration / 2 + np.arange(num_frames) * field.step

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, 1, samples) -> (batch, frames, speakers) activity in [0, 1]."""
        out = self.model(waveforms)
        if self._to_multilabel is not None:
            return self._to_multilabel.to_multilabel(out)  # overlapping classes: both speakers at 1
        return out


class PyannoteDiarizationRuntime:
    """The diarization runtime of ``--diarizer pyannote``: the same interface as DiarizationRuntime's."""

    def __init__(self, runtime_config: RuntimeConfig, diarization_config: DiarizationConfig,
                 segmentation: SegmentationModel, embedding: Any,
                 on_batch: Callable[[int, float], object] | None = None, final_pipeline: Any = None) -> None:
        runtime_config.apply_to_process()
        self.config = runtime_config
        self.diarization = diarization_config
        self.stream: PyannoteStreamConfig = diarization_config.pyannote
        self.device = resolve_device(runtime_config.device)
        if segmentation.sample_rate_hz != diarization_config.sample_rate_hz:
            raise ConfigError(f"the segmentation model runs at {segmentation.sample_rate_hz} Hz, the sessions at "
                              f"{diarization_config.sample_rate_hz} Hz")
        self.segmentation = segmentation.to(self.device)
        self.embedding = embedding.to(self.device).eval()
        self.final_pipeline = final_pipeline
        frame = diarization_config.frame_samples
        window_frames = round(segmentation.duration_s * diarization_config.sample_rate_hz / frame)
        self.layout = BufferLayout(frame, self.stream.step_frames, window_frames)
        if self.stream.latency_steps > self.layout.buffer_steps - 1:
            raise ConfigError(f"[pyannote] latency_steps {self.stream.latency_steps} exceeds the buffer: at most "
                              f"{self.layout.buffer_steps - 1} with a {segmentation.duration_s:g} s buffer")
        # the model frame nearest to each session frame of the buffer
        centres_s = segmentation.frame_centres_s(self.window_samples)
        frame_centres_s = (np.arange(window_frames) + 0.5) * frame / diarization_config.sample_rate_hz
        self._nearest = np.abs(frame_centres_s[:, None] - centres_s[None, :]).argmin(axis=1)
        self.embedding_dimension = self._probe()
        self._worker: BatchWorker[DiarizeRequest, StepAnalysis] = BatchWorker(
            self._process, max_batch=runtime_config.max_batch, name="rtsep-pyannote", on_batch=on_batch,
            gather_s=diarization_config.gather_s)

    def _probe(self) -> int:
        """Both models once on a silent buffer, at start-up: a model that cannot run on the session's buffers fails
        here (the server does not start) rather than in the first session; returns the embedding's dimension."""
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                silence = torch.zeros(1, 1, self.window_samples, device=self.device)
                activity = self.segmentation(silence)
                out = self.embedding(silence, weights=torch.ones(1, activity.shape[1], device=self.device))
        except Exception as exc:  # noqa: BLE001 - any failure here means the pair cannot serve sessions
            seconds = self.window_samples / self.diarization.sample_rate_hz
            raise ModelLoadError(f"the pyannote models fail on a {seconds:g} s buffer: {type(exc).__name__}: {exc}"
                                 ) from exc
        return int(out.shape[-1])

    @property
    def window_samples(self) -> int:
        """The buffer (the segmentation model's duration) on the session frame grid."""
        return self.layout.window_frames * self.layout.frame_samples

    @property
    def queue_depth(self) -> int:
        return self._worker.queue_depth

    def backlog_s(self) -> float:
        """How long the oldest step waiting for this runtime's inference has waited (0: none waits)."""
        return self._worker.oldest_wait_s()

    def new_diarizer(self, max_speakers: int) -> PyannoteStreamDiarizer:
        return PyannoteStreamDiarizer(self.stream, self.layout, max_speakers)

    def submit(self, key: Hashable, request: DiarizeRequest) -> Future:
        return self._worker.submit(key, request)

    def close(self) -> None:
        self._worker.close()

    def _process(self, requests: Sequence[DiarizeRequest]) -> list[StepAnalysis]:
        lay = self.layout
        dev = self.device
        with torch.inference_mode():
            waveforms = torch.from_numpy(np.stack([r.window for r in requests])).to(dev).unsqueeze(1)
            model_activity = self.segmentation(waveforms).float()  # (B, model frames, K)
            activity_np = model_activity.cpu().numpy()
            local_all = activity_np[:, self._nearest, :]  # (B, buffer frames, K) on the session's frames
            interval = self.stream.embedding_interval_steps
            embed = [r.step_index % interval == 0 for r in requests]
            pairs = [(b, k) for b in range(len(requests)) for k in range(activity_np.shape[2])
                     if embed[b] and local_all[b, :, k].max() >= self.stream.active_threshold]
            embeddings = np.full((len(requests), activity_np.shape[2], self.embedding_dimension), np.nan, np.float32)
            weights_all = torch.from_numpy(embedding_weights(
                activity_np, self.stream.overlap_penalty_gamma, self.stream.overlap_penalty_beta
            ).astype(np.float32)).to(dev)
            batch = self.stream.batch_size
            for lo in range(0, len(pairs), batch):
                chunk = pairs[lo: lo + batch]
                index_b = torch.tensor([b for b, _ in chunk], device=dev)
                index_k = torch.tensor([k for _, k in chunk], device=dev)
                weights = weights_all[index_b, :, index_k]  # (P, model frames)
                with warnings.catch_warnings():  # pyannote warns when weights and its frames differ in number
                    warnings.simplefilter("ignore")
                    out = self.embedding(waveforms[index_b], weights=weights).float().cpu().numpy()
                for j, (b, k) in enumerate(chunk):
                    embeddings[b, k] = out[j]
        results = []
        for b, r in enumerate(requests):
            local = local_all[b]
            newest = local[-lay.step_frames:].max(axis=1)
            results.append(StepAnalysis(r.step_index, r.start_sample, r.valid_samples, newest.astype(np.float32),
                                        None, local_activity=local,
                                        local_embeddings=embeddings[b] if embed[b] else None))
        return results


def load_pyannote_runtime(runtime_config: RuntimeConfig, diarization_config: DiarizationConfig,
                          on_batch: Callable[[int, float], object] | None = None) -> PyannoteDiarizationRuntime:
    cfg = diarization_config
    if not cfg.segmentation or not cfg.embedding:
        raise ConfigError("--diarizer pyannote needs --segmentation PATH and --embedding PATH (local pyannote.audio "
                          "checkpoints: docs/models.md)")
    segmentation = SegmentationModel(load_model(cfg.segmentation, "segmentation"), cfg.segmentation)
    embedding = load_model(cfg.embedding, "embedding")
    try:
        embedding.specifications  # noqa: B018 - an embedding model declares a chunk-level representation
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"embedding: {cfg.embedding} has no task specifications (not an embedding model)"
                             ) from exc
    if getattr(embedding.specifications, "resolution", None) is None or \
            embedding.specifications.resolution.name != "CHUNK":
        raise ModelLoadError(f"embedding: {cfg.embedding} is not a speaker-embedding model (chunk-level "
                             "representation expected)")
    final = load_final_pipeline(cfg.final_pipeline, runtime_config.device) if cfg.final_pipeline else None
    return PyannoteDiarizationRuntime(runtime_config, diarization_config, segmentation, embedding, on_batch, final)


class FinalPipeline:
    """``pyannote.audio.Pipeline`` loaded from a local directory, run on a whole session's audio (one at a time)."""

    def __init__(self, pipeline: Any, directory: str) -> None:
        self.pipeline = pipeline
        self.directory = directory
        self._lock = threading.Lock()

    def segments(self, samples: np.ndarray, sample_rate_hz: int, max_speakers: int) -> list[tuple[int, int, str]]:
        """(start_sample, end_sample, pyannote's label) of the pipeline's diarization, overlaps included."""
        if samples.size == 0:
            return []
        waveform = torch.from_numpy(np.ascontiguousarray(samples, np.float32)).unsqueeze(0)
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = self.pipeline({"waveform": waveform, "sample_rate": sample_rate_hz}, max_speakers=max_speakers)
        annotation = getattr(output, "speaker_diarization", output)
        out = []
        for segment, _, label in annotation.itertracks(yield_label=True):
            start, end = round(segment.start * sample_rate_hz), round(segment.end * sample_rate_hz)
            if end > start:
                out.append((start, min(end, samples.size), str(label)))
        return sorted(out)


def load_final_pipeline(directory: str | os.PathLike[str], device: str = "cpu") -> FinalPipeline:
    """A pyannote.audio pipeline from a local directory (its config.yaml and the checkpoints it references)."""
    path = Path(directory).expanduser()
    config = path / PIPELINE_NAME if path.is_dir() else path
    if not config.is_file():
        raise ModelLoadError(f"final pipeline: {path} has no {PIPELINE_NAME} (expected a local pyannote.audio "
                             "pipeline directory: config.yaml and the checkpoints it references, docs/models.md)")
    pipeline = _from_pretrained("Pipeline", path, f"final pipeline: cannot load {config}")
    pipeline.to(resolve_device(device))
    return FinalPipeline(pipeline, str(path))
