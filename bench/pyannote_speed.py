"""Cost of one batched tick of the ``--diarizer pyannote`` runtime versus the number of sessions in it, with models of
the real sizes (randomly initialised: speed does not depend on the weights' values, and no weights exist here).

    python -m bench.pyannote_speed [--sizes 1 4 8] [--ticks 12] [--threads 1] [--embedding-interval 1 4]

Segmentation: PyanNet with its default sizes (segmentation-3.0's architecture: SincNet, 4 x 128 BiLSTM, 2 x 128
linear, powerset of 3 speakers, at most 2 at once, 5 s buffers), its classifier set so that two local speakers are
active in every buffer: the most embeddings such a model asks for, an upper bound per buffer. Embedding:
WeSpeakerResNet34 with its default sizes (pyannote/wespeaker-voxceleb-resnet34-LM's, and community-1's embedding).
Calls the runtime's batch function directly (no server, no event loop) on real speech from the sample, and reports
the mean tick over whole embedding cycles and the inference real-time factor per session (tick / sessions / step).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.common import add_audio_args, audio_paths, machine_note


def save_real_size_models(root: Path) -> tuple[Path, Path]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    import lightning
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet

    def save(model, path: Path) -> Path:
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                      "pytorch-lightning_version": lightning.__version__}
        model.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, path)
        return path

    torch.manual_seed(0)
    segmentation = PyanNet()
    segmentation.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=5.0,
        classes=["speaker#1", "speaker#2", "speaker#3"], powerset_max_classes=2, permutation_invariant=True)
    segmentation.build()
    with torch.no_grad():  # the powerset class {speaker 1, speaker 2} wins: two embeddings per buffer, the most
        segmentation.classifier.bias.fill_(-20.0)  # a powerset model of at most 2 at once ever asks for
        segmentation.classifier.bias[4] = 20.0
    embedding = WeSpeakerResNet34()
    embedding.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                              duration=5.0)
    return save(segmentation, root / "segmentation.bin"), save(embedding, root / "embedding.bin")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--ticks", type=int, default=12, help="timed after 2 of warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads ([runtime] torch_threads)")
    parser.add_argument("--embedding-interval", type=int, nargs="+", default=[1, 4],
                        help="[pyannote] embedding_interval_steps values to time side by side")
    add_audio_args(parser)
    args = parser.parse_args()
    note = machine_note()
    from rtsep.config import load_config
    from rtsep.runtime.diarization import DiarizeRequest
    from rtsep.runtime.pyannote import load_pyannote_runtime

    audio, _ = sf.read(str(audio_paths(args)[0]), dtype="float32")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        segmentation, embedding = save_real_size_models(Path(scratch))
        for interval in args.embedding_interval:
            config = load_config(env={}, overrides={
                "diarization": {"backend": "pyannote", "segmentation": str(segmentation),
                                "embedding": str(embedding)},
                "pyannote": {"embedding_interval_steps": interval},
                "runtime": {"torch_threads": args.threads}}).pipeline
            runtime = load_pyannote_runtime(config.runtime, config.diarization)
            step, window = config.diarization.step_samples, runtime.window_samples
            step_s = config.diarization.step_s
            try:
                for size in args.sizes:
                    times = []
                    # whole embedding cycles, so that every interval's median spans its steps with and without
                    ticks = -(-args.ticks // interval) * interval
                    for k in range(ticks + interval):
                        end = window + (k * step) % (audio.size - window - step) + step
                        requests = [DiarizeRequest(k, end - step, step, audio[end - step: end].copy(),
                                                   audio[end - window: end].copy(), None) for _ in range(size)]
                        t0 = time.perf_counter()
                        runtime._process(requests)
                        times.append(time.perf_counter() - t0)
                    tick_s = float(np.mean(times[interval:]))  # the mean: a cycle's ticks differ by design
                    rows.append({"embedding_interval_steps": interval, "sessions": size,
                                 "tick_ms_mean": round(tick_s * 1e3, 1),
                                 "inference_rtf_per_session": round(tick_s / size / step_s, 4)})
            finally:
                runtime.close()
    print(json.dumps({"rows": rows, "step_s": step_s, "buffer_s": window / 16000, "threads": args.threads,
                      "machine": note}, indent=1))


if __name__ == "__main__":
    main()
