"""The pyannote backends through real checkpoint loading: tiny randomly initialised models saved in pyannote.audio's
own format (tests/pyannote_models.py), a real server session, ``rtsep process`` and ``--final-pipeline``."""

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from rtsep_client import stream_file

from rtsep.cli import main
from rtsep.config import load_config
from rtsep.errors import ConfigError, ModelLoadError
from rtsep.runtime.diarization import DiarizeRequest
from rtsep.runtime.pyannote import load_final_pipeline, load_pyannote_runtime
from rtsep.stream.turns import StepAnalysis
from tests.conftest import run_server
from tests.pyannote_models import save_embedding, save_pipeline_dir, save_segmentation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyannote")
    return {
        "powerset": save_segmentation(root / "powerset" / "pytorch_model.bin", powerset=True),
        "multilabel": save_segmentation(root / "multilabel.ckpt", powerset=False),
        "speaker0": save_segmentation(root / "speaker0.ckpt", powerset=True, always=(0,)),
        "overlap": save_segmentation(root / "overlap.ckpt", powerset=True, always=(0, 2)),
        "embedding": save_embedding(root / "embedding" / "pytorch_model.bin"),
        "pipeline": save_pipeline_dir(root / "pipeline"),
    }


def pyannote_pipeline(segmentation, embedding, final=None, **pyannote):
    overrides = {"separator": {"name": "none"},
                 "diarization": {"backend": "pyannote", "segmentation": str(segmentation),
                                 "embedding": str(embedding), "final_pipeline": final and str(final)},
                 "pyannote": pyannote}
    return load_config(env={}, overrides=overrides).pipeline


def step_requests(runtime, audio: np.ndarray, steps: int) -> list[DiarizeRequest]:
    step = runtime.diarization.step_samples
    window = runtime.window_samples
    out = []
    for t in range(steps):
        end = (t + 1) * step
        buffer = np.zeros(window, np.float32)
        part = audio[max(0, end - window): end]
        buffer[window - part.size:] = part
        out.append(DiarizeRequest(t, t * step, step, audio[t * step: end], buffer, None))
    return out


@pytest.mark.parametrize("kind", ["powerset", "multilabel"])
def test_the_runtime_gives_local_speakers_and_their_embeddings_for_each_buffer(models, meeting_wav, kind):
    interval = 1 if kind == "powerset" else 2  # the multilabel run: embeddings every other step only
    config = pyannote_pipeline(models[kind], models["embedding"], embedding_interval_steps=interval)
    runtime = load_pyannote_runtime(config.runtime, config.diarization)
    try:
        audio, _ = sf.read(str(meeting_wav), dtype="float32")
        requests = step_requests(runtime, audio, 3)
        results: list[StepAnalysis] = [f.result(timeout=60) for f in [runtime.submit("s", r) for r in requests]]
    finally:
        runtime.close()
    assert runtime.window_samples == 5 * 16000 // 512 * 512  # the model's 5 s on the 32 ms frame grid
    assert runtime.segmentation.powerset is (kind == "powerset")
    for result in results:
        assert result.local_activity.shape == (runtime.layout.window_frames, 3)
        if result.step_index % interval:
            assert result.local_embeddings is None
            continue
        assert result.local_embeddings.shape == (3, 32)
        active = result.local_activity.max(axis=0) >= runtime.stream.active_threshold
        assert np.isfinite(result.local_embeddings[active]).all() and np.isnan(result.local_embeddings[~active]).all()
        if kind == "powerset":  # hard multilabel from the powerset: 0 or 1, at most two at once
            assert set(np.unique(result.local_activity).tolist()) <= {0.0, 1.0}
            assert result.local_activity.sum(axis=1).max() <= 2


def test_a_powerset_model_whose_overlap_class_wins_labels_both_speakers(models, meeting_wav, tmp_path):
    out = tmp_path / "out"
    # a powerset model whose class {speaker 1, speaker 3} always wins: every frame is overlapped speech
    code = main(["process", str(meeting_wav), "--out", str(out), "--quiet", "--separator", "none",
                 "--diarizer", "pyannote", "--segmentation", str(models["overlap"]),
                 "--embedding", str(models["embedding"])])
    assert code == 0
    for kind in ("timeline.json", "timeline.live.json"):
        timeline = json.loads((out / kind).read_text())
        speakers = {s["speaker"] for s in timeline["segments"]}
        assert len(speakers) == 2, kind
        for speaker in speakers:  # each is labelled over the whole file, at once with the other
            covered = sum(s["end_s"] - s["start_s"] for s in timeline["segments"] if s["speaker"] == speaker)
            assert covered == pytest.approx(20.0, abs=0.6), (kind, speaker)
    assert len(list((out / "tracks").glob("*.wav"))) >= 1


async def test_a_server_session_diarizes_with_the_pyannote_backend(models, meeting_wav, tmp_path):
    pipeline = pyannote_pipeline(models["speaker0"], models["embedding"], latency_steps=2)
    with run_server(tmp_path / "data", pipeline=pipeline) as server:
        result = await stream_file(meeting_wav, server.ws_url, tmp_path / "out", speed=0)
    assert result.speakers
    live = [e for e in result.events if e["type"] == "segment"]
    assert live and sum(e["end_s"] - e["start_s"] for e in live) >= 19.0  # the model says speech throughout
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert timeline["kind"] == "final" and timeline["segments"]
    assert {s["speaker"] for s in timeline["segments"]} <= set(result.speakers)  # the live names
    assert result.label_latency_s


def test_process_takes_the_final_timeline_from_a_local_pipeline_directory(models, meeting_wav, tmp_path):
    out = tmp_path / "out"
    code = main(["process", str(meeting_wav), "--out", str(out), "--quiet", "--separator", "none",
                 "--diarizer", "pyannote", "--segmentation", str(models["powerset"]),
                 "--embedding", str(models["embedding"]), "--final-pipeline", str(models["pipeline"])])
    assert code == 0
    final = json.loads((out / "timeline.json").read_text())["segments"]
    live = json.loads((out / "timeline.live.json").read_text())["segments"]
    # the same pipeline run directly on the file, its labels named after the live speakers as rtsep names them
    from rtsep.diarize.pyannote_stream import name_after_live
    from rtsep.stream.turns import speaker_name

    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    found = load_final_pipeline(models["pipeline"]).segments(audio, rate, 8)
    assert found, "the random pipeline found no speech: the comparison below would prove nothing"
    live_samples = [(round(s["start_s"] * rate), round(s["end_s"] * rate), int(s["speaker"].split("_")[1]))
                    for s in live]
    expected = [(a / rate, b / rate, speaker_name(k)) for a, b, k in name_after_live(found, live_samples, rate)]
    got = [(s["start_s"], s["end_s"], s["speaker"]) for s in final]
    assert len(got) == len(expected)
    for (a, b, k), (c, d, m) in zip(sorted(got), sorted(expected)):
        assert (a, b, k) == (pytest.approx(c, abs=0.01), pytest.approx(d, abs=0.01), m)


def test_the_embedded_diarizer_also_takes_a_final_pipeline(models, meeting_wav, tmp_path):
    out = tmp_path / "out"
    code = main(["process", str(meeting_wav), "--out", str(out), "--quiet", "--separator", "none",
                 "--final-pipeline", str(models["pipeline"])])
    assert code == 0
    assert json.loads((out / "timeline.json").read_text())["kind"] == "final"


def test_missing_or_wrong_files_are_one_clear_line_and_exit_2(models, meeting_wav, tmp_path, capsys):
    base = ["process", str(meeting_wav), "--out", str(tmp_path / "out"), "--quiet", "--separator", "none",
            "--diarizer", "pyannote"]
    not_a_checkpoint = tmp_path / "notes.bin"
    not_a_checkpoint.write_text("not a checkpoint")
    cases = [
        ([], "needs --segmentation PATH and --embedding PATH"),
        (["--segmentation", str(tmp_path / "absent.bin"), "--embedding", str(models["embedding"])],
         f"segmentation: {tmp_path / 'absent.bin'} does not exist"),
        (["--segmentation", str(tmp_path), "--embedding", str(models["embedding"])],
         f"segmentation: {tmp_path} is a directory without pytorch_model.bin"),
        (["--segmentation", str(not_a_checkpoint), "--embedding", str(models["embedding"])],
         f"segmentation: cannot load {not_a_checkpoint} as a pyannote.audio checkpoint"),
        (["--segmentation", str(models["embedding"]), "--embedding", str(models["embedding"])],
         "is not a frame-level segmentation model"),
        (["--segmentation", str(models["powerset"]), "--embedding", str(models["powerset"])],
         "is not a speaker-embedding model"),
        (["--segmentation", str(models["powerset"]), "--embedding", str(models["embedding"]),
          "--final-pipeline", str(tmp_path)], f"final pipeline: {tmp_path} has no config.yaml"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("rtsep: error:")]
        assert len(lines) == 1 and message in lines[0], (extra, err[-1500:])
        assert "Traceback" not in err


def test_the_server_refuses_to_start_without_its_checkpoints(models, tmp_path):
    from rtsep.config import AppConfig
    from rtsep.server import build_services

    pipeline = pyannote_pipeline(tmp_path / "absent.bin", models["embedding"])
    with pytest.raises(ModelLoadError, match="absent.bin does not exist"):
        build_services(AppConfig(pipeline=pipeline))
    with pytest.raises(ConfigError, match="latency_steps"):
        bad = pyannote_pipeline(models["powerset"], models["embedding"])
        bad = replace(bad, diarization=replace(bad.diarization, pyannote=replace(bad.diarization.pyannote,
                                                                                 latency_steps=9)))
        load_pyannote_runtime(bad.runtime, bad.diarization)


def test_loading_a_checkpoint_switches_hub_and_telemetry_off_first(models):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PYANNOTE_METRICS_ENABLED")}
    env["PYTHONPATH"] = os.pathsep.join([str(repo), str(repo / "clients" / "python")])
    code = ("import sys; from rtsep.runtime.pyannote import load_model; "
            f"load_model({str(models['powerset'])!r}, 'segmentation'); "
            "import huggingface_hub.constants as c; from pyannote.audio.telemetry.metrics import is_metrics_enabled; "
            "print(c.HF_HUB_OFFLINE, is_metrics_enabled())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "False"]
