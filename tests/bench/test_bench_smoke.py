"""Each kept bench script, run as a module for seconds on a short clip: the benches stay runnable.

Not in the default run (pyproject's addopts): ``pytest -m bench_smoke``. The figures are meaningless at this
size; each test checks that the script ends cleanly and reports what it measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from rtsep.separate.convtasnet import default_checkpoint_path

pytestmark = [pytest.mark.bench_smoke, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip(sample_paths, tmp_path_factory) -> tuple[Path, Path]:
    """8 s of the two-talker sample from where its speech starts, and its reference turns cut to them (wav, rttm)."""
    wav, rttm = sample_paths
    audio, rate = sf.read(str(wav), dtype="float32")
    first_s, seconds = 6.5, 8.0
    folder = tmp_path_factory.mktemp("clip")
    sf.write(str(folder / "clip.wav"), audio[int(first_s * rate) : int((first_s + seconds) * rate)], rate)
    lines = []
    for line in rttm.read_text().splitlines():
        fields = line.split()
        start, end = float(fields[3]) - first_s, float(fields[3]) + float(fields[4]) - first_s
        start, end = max(start, 0.0), min(end, seconds)
        if start < end:
            fields[3], fields[4] = f"{start:.3f}", f"{end - start:.3f}"
            lines.append(" ".join(fields))
    (folder / "clip.rttm").write_text("\n".join(lines) + "\n")
    return folder / "clip.wav", folder / "clip.rttm"


def run_module(module: str, *args: str | Path, timeout_s: float = 240) -> str:
    """``python -m module args`` from the repository root; its stdout (fails with its stderr)."""
    path = [str(REPO), str(REPO / "clients" / "python"), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))})
    assert done.returncode == 0, f"{module} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def last_json(stdout: str) -> dict:
    """The report a script prints last: one indented JSON document or the last JSON line."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.splitlines()[-1])


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_diarization_quality(clip):
    report = last_json(run_module("bench.diarization_quality", "--runs", "1", "--wav", clip[0], "--rttm", clip[1]))
    assert len(report["speakers_found"]) >= 1
    assert isinstance(report["final"]["der"], float) and report["process_rtf_median"] > 0


def test_diarization_shift(clip):
    report = last_json(run_module("bench.diarization_shift", "--shifts-ms", "0", "50", "--wav", clip[0],
                                  "--rttm", clip[1]))
    assert [row["shift_ms"] for row in report["rows"]] == [0, 50]
    assert set(report["summary"]) == {"live_der_mean", "live_der_max", "final_der_mean", "final_der_max"}


def test_batching(clip):
    report = last_json(run_module("bench.batching", "--sizes", "1", "2", "--ticks", "7", "--wav", clip[0],
                                  "--rttm", clip[1]))
    assert [row["sessions"] for row in report["rows"]] == [1, 2]
    assert all(row["tick_ms_median"] > 0 for row in report["rows"])


def test_pyannote_speed(clip):
    report = last_json(run_module("bench.pyannote_speed", "--sizes", "1", "--ticks", "2", "--embedding-interval",
                                  "2", "--wav", clip[0], "--rttm", clip[1]))
    assert [(row["embedding_interval_steps"], row["sessions"]) for row in report["rows"]] == [(2, 1)]
    assert report["rows"][0]["tick_ms_mean"] > 0 and report["buffer_s"] == pytest.approx(5.0, abs=0.01)


def test_streaming_latency(clip):
    report = last_json(run_module("bench.streaming_latency", "latency", "--runs", "1", "--speed", "2",
                                  "--wav", clip[0], "--rttm", clip[1]))
    assert report["runs"][0]["frames"] > 0 and report["median"]["frame_p95_s"] is not None
    assert report["runs"][0]["source_frames"] > 0 and report["median"]["source_frame_p95_s"] is not None


def test_streaming_capacity(clip):
    report = last_json(run_module("bench.streaming_latency", "capacity", "--sessions", "2", "--seconds", "3",
                                  "--wav", clip[0], "--rttm", clip[1]))
    (level,) = report["levels"]
    assert level["sessions"] == 2 and level["errors"] == []


def test_load_test(clip):
    report = last_json(run_module("bench.load_test", "--sessions", "2", "--minutes", "0.05", "--wav", clip[0],
                                  "--rttm", clip[1]))
    assert report["completed"] == 2 and report["errors"] == []
    assert report["server_cpu_s_per_session_s"] > 0 and report["clients_cpu_s_per_session_s"] > 0


def test_load_test_cost_mode_with_deflate_and_a_config(clip):
    report = last_json(run_module("bench.load_test", "--sessions", "2", "--minutes", "0.05", "--speed", "2",
                                  "--overflow", "backpressure", "--deflate", "--config",
                                  REPO / "bench/configs/no-gather.toml", "--wav", clip[0], "--rttm", clip[1]))
    assert report["completed"] == 2 and report["deflate"] and report["overflow"] == "backpressure"


def test_resample_speed():
    report = last_json(run_module("bench.resample_speed", "--calls", "20", "--repeats", "1"))
    assert len(report["us_per_call_median"]) == 2 and all(v > 0 for v in report["us_per_call_median"].values())


def test_fuzz_server(clip):
    report = last_json(run_module("bench.fuzz_server", "--count", "24", "--concurrency", "4", "--wav", clip[0],
                                  "--rttm", clip[1]))
    assert report["clear_closes"] == 24 and report["server_alive"]
    assert report["good_sessions_identical_to_unloaded_run"] == "2/2"


def test_loop_lag(clip):
    report = last_json(run_module("bench.loop_lag", "--sessions", "2", "--seconds", "3", "--idle-s", "0.5",
                                  "--server-cwd", REPO, "--wav", clip[0], "--rttm", clip[1]))
    assert report["sessions"]["completed"] == 2 and report["sessions"]["errors"] == []
    assert report["failures"] == 0 and report["loaded"]["n"] > 0 and report["loaded"]["p95_ms"] > 0


def test_webrtc_latency(clip):
    report = last_json(run_module("bench.webrtc_latency", "latency", "--runs", "1", "--wav", clip[0],
                                  "--rttm", clip[1]))
    (run,) = report["runs"]
    assert run["markers"] > 0 and run["found"] + run["missing"] == run["markers"]


def test_webrtc_cpu(clip):
    report = last_json(run_module("bench.webrtc_latency", "cpu", "--sessions", "1", "--runs", "1", "--idle-s", "1",
                                  "--wav", clip[0], "--rttm", clip[1]))
    assert {r["transport"] for r in report["results"]} == {"webrtc", "websocket"}


def test_separation_eval(tmp_path):
    out = run_module("bench.separation.eval", "--checkpoint", default_checkpoint_path(), "--oracle", "--rtf",
                     "--rtf-steps", "800", "--rtf-seconds", "1")
    rows = json_lines(out)
    oracle = next(r["oracle_irm"] for r in rows if "oracle_irm" in r)
    (result,) = [r for r in rows if "checkpoint" in r]
    assert oracle["real"]["n"] == result["real"]["n"] > 0
    assert set(result["rtf"]) == {"step800_batch1", "step800_batch8", "offline_batch1"}


def test_separation_eval_postfilter_time():
    rows = json_lines(run_module("bench.separation.eval", "--postfilter-time-s", "1", "2"))
    assert [r["postfilter_file_s"] for r in rows] == [1.0, 2.0]


def test_separation_process_remix(tmp_path):
    out = run_module("bench.separation.process_remix", "--only-fold", "0", "--snrs-db", "0", "--adapt-steps", "0",
                     "--ensemble", "1", "--out", tmp_path, timeout_s=300)
    rows = json_lines(out)
    assert rows[0]["meeting"] == "fold0_+0dB" and set(rows[0]["by_snr"]) == {"+0dB"}
    assert rows[-1]["meetings"] == 1 and rows[-1]["mixtures"] == 1


def test_separation_adapt_step_speed():
    rows = json_lines(run_module("bench.separation.adapt_step_speed", "--threads", "1", "--batch-size", "1",
                                 "--segment-s", "0.5", "--steps", "2", "--kinds", "plain"))
    assert [(r["threads"], r["step"]) for r in rows] == [(1, "plain")] and rows[0]["step_s_median"] > 0


def test_separation_adapt():
    out = run_module("bench.separation.adapt", "--checkpoint", default_checkpoint_path(), "--steps", "2",
                     "--batch-size", "1", "--segment-s", "0.5", "--only-fold", "0", "--no-compile")
    summary = json_lines(out)[-1]
    assert summary["folds"] == 5 and "after_db" in summary


def test_separation_adapt_sweep(tmp_path):
    out = run_module("bench.separation.adapt_sweep", "--folds", "2", "--jobs", "2", "--out", tmp_path / "sweep.jsonl",
                     "--recipe", f"smoke|--checkpoint {default_checkpoint_path()} --steps 1 --batch-size 1 "
                     "--segment-s 0.5 --no-compile")
    rows = json_lines(out)
    assert sorted(r["fold"] for r in rows) == [0, 1] and all(r["rc"] == 0 and "after" in r for r in rows)


def test_store_latency(postgres):  # the fixture only skips where PostgreSQL is absent; the script starts its own
    report = last_json(run_module("bench.store", "latency", "--sessions", "2", "--seconds", "1"))
    runs = {(r["backend"], r["path"]): r for r in report["runs"]}
    assert set(runs) == {(b, p) for b in ("sqlite", "postgresql") for p in ("writer", "loop")}
    for run in runs.values():
        assert run["writes"]["n"] > 0 and run["writes"]["p95_ms"] >= run["writes"]["p50_ms"]
    for backend in ("sqlite", "postgresql"):  # the writer path confirms every write it was given
        writer = runs[(backend, "writer")]
        n = writer["writes"]["n"] + writer["create"]["n"]
        assert writer["to_commit"]["n"] == writer["on_loop"]["n"] == writer["in_thread"]["n"] == n


def test_store_failover(postgres):
    report = last_json(run_module("bench.store", "failover", "--leases", "1s", "--runs", "1", timeout_s=400))
    assert [r["lease"] for r in report["runs"]] == ["1s"]
    assert report["summary"]["1s"]["median_s"] > 0


def test_final_tracks(clip, tmp_path):
    """A one-meeting folder made of the clip: the mix, its reference turns, and each talker's turns as their refs."""
    import numpy as np

    from rtsep.stream.render import render_speakers

    wav, rttm = clip
    meeting = tmp_path / "meetings" / "m0"
    (meeting / "refs").mkdir(parents=True)
    audio, rate = sf.read(str(wav), dtype="float32")
    sf.write(str(meeting / "mix.wav"), audio, rate)
    (meeting / "ref.rttm").write_text(rttm.read_text())
    segments = [{"speaker": f[7], "start_s": float(f[3]), "end_s": float(f[3]) + float(f[4])}
                for f in (line.split() for line in rttm.read_text().splitlines())]
    for speaker, track in render_speakers(audio, rate, segments, 0.0).items():
        sf.write(str(meeting / "refs" / f"{speaker}.wav"), track.astype(np.float32), rate)
    report = last_json(run_module("bench.final_tracks", "--meetings", tmp_path / "meetings",
                                  "--work", tmp_path / "work"))
    assert report["meetings"] == 1 and set(report["median_over_meetings_db"]) == {"final", "live", "perfect_gating"}


def test_denoise(tmp_path):
    if not Path("/work/runs/real/corpus/index.json").exists():
        pytest.skip("the real-voice corpus is not built here (python -m training.corpus build)")
    out = tmp_path / "denoise.json"
    run_module("bench.denoise", "--meetings", "1", "--seconds", "8", "--snrs", "clean,5", "--out", out)
    report = json.loads(out.read_text())
    assert set(report["by_snr"]) == {"clean", "5.0"} and report["denoiser_rtf_median"] > 0
    assert all(row["same_length"] for row in report["rows"])
    costs = json.loads(run_module("bench.denoise", "--cost-only", "--meetings", "1", "--seconds", "4"))
    assert costs["cpu_rtf"] > 0 and costs["held_ms_median"] > 0


@pytest.mark.skipif(not Path("/usr/share/games/fillets-ng/sound").is_dir(),
                    reason="the real voices (Debian fillets-ng-data-cs, klettres-data) are not installed")
def test_meetings_build_and_eval(tmp_path):
    """One tiny meeting of the test split's recorded voices, built and scored by bench.meeting_eval."""
    folder = tmp_path / "meetings"
    run_module("bench.meetings", "build", "--split", "test", "--out", folder, "--meetings", "1", "--duration-s", "20")
    meta = json.loads((folder / "test-00" / "meta.json").read_text())
    assert len(meta["talkers"]) == 2 and (folder / "test-00" / "ref.rttm").read_text().startswith("SPEAKER test-00 1")
    out = tmp_path / "eval.jsonl"
    run_module("bench.meeting_eval", "--meetings", folder, "--limit", "1", "--no-sample", "--out", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    meeting = next(r for r in rows if r["kind"] == "meeting")
    assert 0 <= meeting["final"]["der"] and meeting["final"]["ref_speakers"] == 2
    assert len(meeting["perfect_gating"]["per_reference"]) == 2
    assert any(r["kind"] == "summary" and r["group"] == "all" for r in rows)


def test_live_replay_and_bound(tmp_path):
    """The live diarizer captured on one tiny meeting, replayed with a setting, and bounded by hindsight labels."""
    folder, cache = tmp_path / "meetings", tmp_path / "cache"
    run_module("bench.meetings", "build", "--split", "dev", "--out", folder, "--meetings", "1", "--duration-s", "20")
    run_module("bench.live_replay", "capture", "--meetings", folder, "--out", cache)
    swept = run_module("bench.live_replay", "sweep", "--meetings", folder, "--cache", cache,
                       "--set", "live_hangover_frames=5,7")
    assert len([line for line in swept.splitlines() if line.startswith("| 5 ") or line.startswith("| 7 ")]) == 2
    rows = json_lines(run_module("bench.live_bound", "--meetings", folder, "--cache", cache, "--radius", "0",
                                 "--causal", "--spectral-min", "20"))
    assert [r["labels"] for r in rows] == ["hindsight, radius 0", "causal re-clustering"]
    assert all(0 <= r["der"] and r["meetings"] == 1 for r in rows)


def test_gil_convoy():
    rows = json_lines(run_module("bench.gil_convoy", "--sessions", "2", "--ticks", "2", "--busy-share", "0.3"))
    assert len(rows[-1]["rows"]) == 4 and all(r["eager_ms"] > 0 and r["traced_ms"] > 0 for r in rows[-1]["rows"])


def test_process_speed(clip):
    rows = json_lines(run_module("bench.process_speed", "--runs", "1", "--meeting-s", "0", "--wav", clip[0],
                                 "--flags", "--adapt-budget-rtf 0.2 --ensemble 1", timeout_s=400))
    (summary,) = [r for r in rows if "summary" in r]
    assert summary["runs"] == 1 and summary["default_wall_s_median"] > 0 and summary["none_wall_s_median"] > 0
    assert {r["command"] for r in rows if "command" in r} == {"default", "none"}


def test_process_meetings(clip, tmp_path):
    import numpy as np

    # a two-speaker corpus of the clip's halves (the figures mean nothing; the script runs end to end)
    audio, rate = sf.read(str(clip[0]), dtype="float32")
    import soxr

    audio = soxr.resample(audio, rate, 8000)
    half = len(audio) // 2
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    index = {}
    for name, part in (("x", np.tile(audio[:half], 4)), ("y", np.tile(audio[half:], 4))):  # 3 overlaps of 3 s
        np.save(corpus / f"{name}.npy", (part * 32767).astype(np.int16))
        index[name] = {"split": "valid", "offsets": list(range(0, len(part), 8000))}
    (corpus / "index.json").write_text(json.dumps(index))
    rows = json_lines(run_module("bench.separation.process_meetings", "--split", "valid", "--corpus", corpus,
                                 "--pair", "x+y", "--turns-s", "2", "--out", tmp_path / "out",
                                 "--setting", "unadapted=--adapt-steps 0", timeout_s=400))
    (summary,) = [r for r in rows if "summary" in r]
    assert summary["meetings"] == 1 and summary["overlaps"] == 3 and isinstance(summary["si_sdri_db_mean"], float)


def test_voice_match(sample_paths, tmp_path):
    """A corpus of two "actors": the sample's two talkers at 8 kHz, both development actors."""
    import numpy as np
    import soxr

    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    turns = {"a": [(10.6, 14.45), (18.1, 21.4)], "b": [(21.8, 27.8), (14.6, 17.8)]}
    index = {}
    for name, spans in turns.items():
        utts = [soxr.resample(audio[int(s * rate): int(e * rate)], rate, 8000) for s, e in spans]
        np.save(tmp_path / f"{name}.npy", (np.concatenate(utts) * 32767).astype(np.int16))
        offsets = np.cumsum([0] + [len(u) for u in utts]).tolist()
        index[name] = {"split": "valid", "source": "smoke", "offsets": offsets}
    (tmp_path / "index.json").write_text(json.dumps(index))
    np.savez(tmp_path / "rirs.npz", rirs=np.array([[[1.0, 0.3, 0.1], [1.0, 0.2, 0.0]]], np.float32))
    out = run_module("bench.voice_match", "--corpus", tmp_path, "--enroll-s", "3.5", "--session-s", "3",
                     "--sessions", "1", "--json", tmp_path / "match.json")
    assert "chosen on dev" in out
    report = json.loads((tmp_path / "match.json").read_text())
    assert set(report["pairs"]) == {"dev/dry", "dev/room"} and report["pairs"]["dev/dry"]["same"]


def test_separated_buffering():
    report = last_json(run_module("bench.separated_buffering", "--step-s", "0.1", "--seconds", "3"))
    (row,) = report["rows"]
    assert row["step_s"] == pytest.approx(0.1) and row["frames"] > 0


def test_adapted_batching():
    report = last_json(run_module("bench.adapted_batching", "--sessions", "2", "--ticks", "2"))
    (row,) = report["rows"]
    assert row["sessions"] == 2 and row["adapted_stacked_ms"] > 0
