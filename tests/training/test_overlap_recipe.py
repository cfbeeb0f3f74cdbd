"""The overlap detector's recipe (training.overlap) on a tiny generated corpus: targets, a few steps, resume."""

import json

import numpy as np
import pytest
import torch

from rtsep.runtime.overlap import OverlapNetConfig, load_overlap_net
from training import overlap
from training.corpus import SAMPLE_RATE_HZ
from training.mixing import RealCorpus


@pytest.fixture()
def corpus_dir(tmp_path):
    rng = np.random.default_rng(0)
    index = {}
    for k, split in enumerate(["train"] * 3 + ["valid"] * 3):
        name = f"s{k}"
        t = np.arange(int(6 * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
        audio = 0.3 * np.sin(2 * np.pi * (150 + 50 * k) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        np.save(tmp_path / f"{name}.npy", (audio * 32767).astype(np.int16))
        index[name] = {"split": split, "source": "klettres", "offsets": [0, 16000, 32000, 48000]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path


def test_chunks_count_the_talkers_of_each_frame_from_their_dry_activity(corpus_dir):
    corpus = RealCorpus(corpus_dir, "train")
    frame = OverlapNetConfig().frame_samples
    config = overlap.ChunkConfig(rooms=0, noise_p=0.0, talkers_p=(0.0, 0.0, 1.0))
    chunker = overlap.MeetingChunker(corpus, config, np.random.default_rng(3), frame)
    seen = set()
    for _ in range(6):
        mix, counts = chunker.draw()
        assert mix.shape == (4 * SAMPLE_RATE_HZ,) and counts.shape == (4 * SAMPLE_RATE_HZ // frame,)
        assert counts.min() >= 0 and counts.max() <= 2
        seen |= set(counts.tolist())
        # silence where nobody is labelled (no noise here), but for edges: a frame next to speech, a piece of
        # an utterance under 50 ms at the chunk's edge (the reference rule drops such islands)
        frames = mix[: counts.size * frame].reshape(counts.size, frame)
        energy = (frames.astype(np.float64) ** 2).mean(1)
        padded = np.concatenate([[0], counts, [0]])
        quiet = (counts == 0) & (padded[:-2] == 0) & (padded[2:] == 0)
        loud = energy[quiet] > 1e-6 * energy[counts >= 1].mean()
        assert loud.sum() <= 0.05 * counts.size
    assert seen == {0, 1, 2}
    a = overlap.MeetingChunker(corpus, config, np.random.default_rng(9), frame).draw()
    b = overlap.MeetingChunker(corpus, config, np.random.default_rng(9), frame).draw()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_few_steps_export_loadable_weights_and_resume_continues(corpus_dir, tmp_path):
    state, run = tmp_path / "ov.pt", tmp_path / "run"
    args = ["--corpus", str(corpus_dir), "--state", str(state), "--run-dir", str(run), "--batch", "2",
            "--valid-items", "4", "--rooms", "1", "--valid-every-s", "1e9"]
    assert overlap.main([*args, "--steps", "3"]) == 0
    with pytest.raises(SystemExit):  # an existing state is never overwritten by a new run
        overlap.main([*args, "--steps", "3"])
    first = torch.load(state, weights_only=False)
    assert first["step"] == 3 and first["cpu_s"] > 0 and [h["step"] for h in first["history"]] == [3]
    assert overlap.main([*args, "--resume", "--steps", "2"]) == 0
    second = torch.load(state, weights_only=False)
    assert second["step"] == 5 and [h["step"] for h in second["history"]] == [3, 5]
    assert any(not torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    model, meta = load_overlap_net(state.with_name("ov.best.safetensors"))
    assert meta["step"] in (3, 5) and meta["recipe_version"] == overlap.RECIPE_VERSION
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 5] and all(0 <= line["overlap_share"] <= 1 for line in lines)
    with torch.inference_mode():
        out = model(torch.zeros(1, 4 * SAMPLE_RATE_HZ))
    assert out.shape == (1, 4 * SAMPLE_RATE_HZ // model.config.frame_samples, 3)


def test_export_only_writes_the_states_own_step_with_its_validation_figures(corpus_dir, tmp_path):
    state, run, out = tmp_path / "ov.pt", tmp_path / "run", tmp_path / "export" / "state.safetensors"
    args = ["--corpus", str(corpus_dir), "--state", str(state), "--run-dir", str(run), "--batch", "2",
            "--valid-items", "4", "--rooms", "1", "--valid-every-s", "1e9"]
    assert overlap.main([*args, "--steps", "2"]) == 0
    assert overlap.main([*args, "--resume", "--steps", "2"]) == 0
    saved = torch.load(state, weights_only=False)
    before = state.read_bytes()
    with pytest.raises(SystemExit):  # nowhere to write
        overlap.main(["--state", str(state), "--export-only"])
    assert overlap.main(["--state", str(state), "--export-only", "--export", str(out)]) == 0
    model, meta = load_overlap_net(out)
    assert meta["step"] == saved["step"] == 4 and meta["exported_from"] == "state"
    assert meta["cpu_s"] == round(saved["cpu_s"], 1) and meta["recipe_version"] == overlap.RECIPE_VERSION
    last = saved["history"][-1]
    assert meta["valid"]["overlap_ap"] == last["overlap_ap"] and meta["splits_hash"] == saved["recipe"]["splits_hash"]
    for key, value in saved["model"].items():
        assert torch.equal(model.state_dict()[key], value)
    assert state.read_bytes() == before  # the state itself is only read
    with pytest.raises(SystemExit):  # training still needs its corpus
        overlap.main(["--state", str(tmp_path / "new.pt")])


def test_average_precision_and_f1():
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    positive = np.array([True, False, True, False])
    assert overlap.average_precision(scores, positive) == pytest.approx((1 + 2 / 3) / 2)
    assert overlap.f1_at(scores, positive, 0.5) == pytest.approx((0.5, 0.5, 0.5))
