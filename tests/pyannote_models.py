"""Tiny randomly initialised pyannote.audio models saved in pyannote.audio's own checkpoint format (what a Lightning
trainer writes for a pyannote Model: state_dict, hyper_parameters, and the "pyannote.audio" entry that
``Model.on_save_checkpoint`` adds), so that ``Model.from_pretrained(path)`` and ``Pipeline.from_pretrained(dir)``
load them as they load the real weights. No real weights exist on this machine; these stand in for them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SEGMENTATION_DURATION_S = 5.0

PIPELINE_YAML = """\
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    segmentation: $model/segmentation
    embedding: $model/embedding
    plda: $model/plda
    clustering: AgglomerativeClustering
    embedding_batch_size: 8
    segmentation_batch_size: 8
params:
  segmentation:
    min_duration_off: 0.0
  clustering:
    method: centroid
    min_cluster_size: 1
    threshold: 0.7
"""


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"


def _save(model, path: Path) -> Path:
    import lightning
    import torch

    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": lightning.__version__}
    model.on_save_checkpoint(checkpoint)  # pyannote.audio's own entry: versions, architecture, specifications
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def save_segmentation(path: Path, powerset: bool = True, always: tuple[int, ...] | None = None,
                      architecture: str = "PyanNet", seed: int = 0) -> Path:
    """A segmentation model of 3 local speakers over 5 s: powerset (at most 2 at once, as segmentation-3.0) or
    multilabel, PyanNet (SSeRiouSS's WavLM front end is far too big for a test). Random weights; ``always``: its
    classifier is set so that these local speakers are active on every frame and the others never (a model whose
    answer a test knows)."""
    _offline()
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    if architecture != "PyanNet":
        raise ValueError(f"unsupported test architecture {architecture!r}")
    model = PyanNet(sincnet={"stride": 10}, lstm={"hidden_size": 16, "num_layers": 1},
                    linear={"hidden_size": 16, "num_layers": 1})
    classes = ["speaker#1", "speaker#2", "speaker#3"]
    if powerset:
        spec = Specifications(problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME,
                              duration=SEGMENTATION_DURATION_S, classes=classes, powerset_max_classes=2,
                              permutation_invariant=True)
    else:
        spec = Specifications(problem=Problem.MULTI_LABEL_CLASSIFICATION, resolution=Resolution.FRAME,
                              duration=SEGMENTATION_DURATION_S, classes=classes, permutation_invariant=True)
    model.specifications = spec
    model.build()
    if always is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            if powerset:
                from pyannote.audio.utils.powerset import Powerset

                mapping = Powerset(len(classes), 2).mapping  # (powerset classes, speakers)
                wanted = torch.zeros(len(classes))
                wanted[list(always)] = 1.0
                target = int(torch.nonzero((mapping == wanted).all(dim=1))[0])
                model.classifier.bias.fill_(-20.0)
                model.classifier.bias[target] = 20.0
            else:
                model.classifier.bias.fill_(-20.0)
                model.classifier.bias[list(always)] = 20.0
    return _save(model, path)


def save_embedding(path: Path, seed: int = 0) -> Path:
    """An x-vector (MFCC front end) speaker-embedding model of dimension 32."""
    _offline()
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorMFCC

    torch.manual_seed(seed)
    model = XVectorMFCC(dimension=32)
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                          duration=SEGMENTATION_DURATION_S)
    return _save(model, path)


def save_plda(directory: Path, dimension: int = 32, lda_dimension: int = 16, seed: int = 0) -> Path:
    """A PLDA in pyannote's files (xvec_transform.npz, plda.npz): what community-1's pipeline directory holds."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "xvec_transform.npz", mean1=rng.standard_normal(dimension),
             mean2=rng.standard_normal(lda_dimension), lda=rng.standard_normal((dimension, lda_dimension)))
    transform = np.eye(lda_dimension) + 0.1 * rng.standard_normal((lda_dimension, lda_dimension))
    np.savez(directory / "plda.npz", mu=rng.standard_normal(lda_dimension), tr=transform,
             psi=rng.uniform(0.5, 2.0, lda_dimension))
    return directory


def save_pipeline_dir(directory: Path) -> Path:
    """A local speaker-diarization pipeline directory laid out as pyannote's offline-use instructions describe:
    config.yaml whose ``$model/...`` entries point at the sub-folders' checkpoints."""
    save_segmentation(directory / "segmentation" / "pytorch_model.bin")
    save_embedding(directory / "embedding" / "pytorch_model.bin")
    save_plda(directory / "plda")
    (directory / "config.yaml").write_text(PIPELINE_YAML)
    return directory
