"""SessionPipeline against a fake runtime (the real one is covered by the integration tests)."""

import asyncio
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from rtsep.audio import AudioChunk
from rtsep.diarize.online import DiarizationConfig, StepAnalysis
from rtsep.metrics import Metrics
from rtsep.pipeline import NullOutbox, PipelineConfig, SessionPipeline
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.store.base import SessionInfo
from rtsep.store.sqlite import SqliteSessionStore
from rtsep.stream.session import ChunkReady


class GatedRuntime:
    """Answers 'no speech' for every step, but only once the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.pending: list[tuple[Future, object]] = []
        self.queue_depth = 0

    def submit(self, key, request) -> Future:
        future: Future = Future()
        self.pending.append((future, request))
        return future

    def release_all(self) -> None:
        for future, r in self.pending:
            if not future.done():
                future.set_result(StepAnalysis(r.step_index, r.start_sample, r.valid_samples,
                                               np.zeros(8, np.float32), None))


def _pipeline(tmp_path, overflow: str, runtime) -> tuple[SessionPipeline, Metrics]:
    config = PipelineConfig(diarization=DiarizationConfig(), runtime=RuntimeConfig(max_in_flight_steps=2,
                                                                                    overflow=overflow))
    store = SqliteSessionStore(tmp_path)
    info = SessionInfo("s1", "x", 0.0, "live", "test", 16000, 16000)
    store.create(info)
    metrics = Metrics()
    return SessionPipeline(info=info, config=config, runtime=runtime, store=store, metrics=metrics,
                           outbox=NullOutbox()), metrics


def _step(i: int) -> ChunkReady:
    return ChunkReady(AudioChunk(np.zeros(4096, np.float32), i * 4096, 16000), 4096)


async def test_drop_policy_drops_when_inference_is_behind(tmp_path):
    runtime = GatedRuntime()
    pipeline, metrics = _pipeline(tmp_path, "drop", runtime)
    for i in range(6):
        await asyncio.wait_for(pipeline.feed(_step(i)), 1)  # never blocks
    assert pipeline.dropped_steps == 4 and len(runtime.pending) == 2
    runtime.release_all()
    done = await pipeline.finish()
    assert done.duration_s == pytest.approx(6 * 4096 / 16000)
    assert metrics.dropped_frames._value.get() == 4


async def test_backpressure_policy_waits_and_drops_nothing(tmp_path):
    runtime = GatedRuntime()
    pipeline, _ = _pipeline(tmp_path, "backpressure", runtime)
    await pipeline.feed(_step(0))
    await pipeline.feed(_step(1))
    blocked = asyncio.create_task(pipeline.feed(_step(2)))
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(runtime.pending) == 2
    runtime.release_all()
    await asyncio.wait_for(blocked, 1)
    runtime.release_all()
    await pipeline.finish()
    assert pipeline.dropped_steps == 0 and pipeline.processed_samples == 3 * 4096


def test_separator_and_adaptation_settings_from_cli_and_toml(tmp_path):
    from rtsep.cli import _load, build_parser
    from rtsep.config import load_config

    args = build_parser().parse_args(["process", "x.wav", "--out", "o", "--separator", "convtasnet",
                                      "--adapt-steps", "0"])
    pipeline = _load(args).pipeline
    assert pipeline.separator == "convtasnet" and pipeline.adapt_steps == 0
    off = build_parser().parse_args(["process", "x.wav", "--out", "o", "--separator", "none"])
    assert _load(off).pipeline.separator is None
    for command in (["process", "x.wav", "--out", "o"], ["serve"]):  # the shipped separator is the default
        assert _load(build_parser().parse_args(command)).pipeline.separator == "convtasnet"
    (tmp_path / "off.toml").write_text('[pipeline]\nseparator = "none"\n')
    assert load_config(tmp_path / "off.toml", env={}).pipeline.separator is None
    toml = tmp_path / "c.toml"
    toml.write_text('[pipeline]\nseparator = "convtasnet"\nadapt_live = false\nadapt_min_speech_s = 6.5\n')
    pipeline = load_config(toml, env={}).pipeline
    assert pipeline.separator == "convtasnet" and pipeline.adapt_live is False and pipeline.adapt_min_speech_s == 6.5
