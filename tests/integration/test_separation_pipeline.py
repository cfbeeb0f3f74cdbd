"""A configured separator in the session pipeline: `rtsep process` writes separated/source_<k>.wav and a live
session announces, streams and stores the source tracks (a small random Conv-TasNet written to disk in the
real checkpoint format: the plumbing is tested here, separation quality in bench/separation)."""

import asyncio
import json
import os
from dataclasses import replace

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import websockets

from rtsep.compose import build_adaptive, build_separation, process_file
from rtsep.config import load_config
from rtsep.offline import OfflineConfig
from rtsep.protocol.frames import decode_audio_frame
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig, save_convtasnet
from rtsep.separate.postfilter import WienerConfig
from rtsep.stream.turns import SOURCE_TRACK_BASE
from tests.conftest import run_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    config = ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8, hidden_channels=16,
                              blocks_per_repeat=2, repeats=1, sample_rate_hz=8000)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_convtasnet(ConvTasNet(config).eval(), path)
    return path


def pipeline_config(checkpoint, **adaptation):
    overrides = {"separator": {"name": "convtasnet", "checkpoint": str(checkpoint)}, "adaptation": adaptation}
    return load_config(env={}, overrides=overrides).pipeline


async def test_process_writes_separated_sources(checkpoint, meeting_wav, tmp_path):
    config = pipeline_config(checkpoint)
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    separation = build_separation(config)
    try:
        result = await process_file(meeting_wav, tmp_path, config, runtime, separation=separation)
    finally:
        runtime.close()
        separation.close()
    sources = sorted((tmp_path / "separated").glob("source_*.wav"))
    assert [p.name for p in sources] == ["source_0.wav", "source_1.wav"]
    for path in sources:
        audio, rate = sf.read(str(path))
        assert rate == 16000 and len(audio) == round(result.duration_s * 16000) and np.abs(audio).max() > 0
    assert len(list((tmp_path / "tracks").glob("*.wav"))) == len(result.speakers)  # speaker tracks as before


async def test_process_adapts_to_the_file_then_separates(checkpoint, meeting_wav, tmp_path):
    # uncompiled here (tests/unit/test_separate_adapt.py checks the compiled step in a fresh interpreter): dynamo's
    # tracing in this shared test process could meet other tests' leftover inference threads
    config = pipeline_config(checkpoint, steps=3, batch_size=2)
    # the fixed steps (no time budget: on a busy machine the default budget of this short file may buy none)
    offline = OfflineConfig(adapt_compile=False, adapt_budget_rtf=0.0, ensemble_budget_rtf=0.0)
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    adaptive = build_adaptive(config, offline)
    assert build_adaptive(config, OfflineConfig()).budget == OfflineConfig().budget()  # the defaults' budgets
    assert adaptive.budget.adapt_rtf == 0.0 and adaptive.config.patience_steps == offline.adapt_patience_steps
    assert adaptive.config.steps == 3 and adaptive.config.batch_size == 2
    assert adaptive.model.config.norm_memory_s == config.separator.norm_memory_s == 16.0  # separates with it
    assert 1 <= adaptive.threads <= (os.cpu_count() or 1)  # offline: the cores the rest of the machine leaves
    assert build_adaptive(config, replace(offline, adapt_threads=1)).threads == 1
    assert build_adaptive(pipeline_config(checkpoint, steps=0), offline) is None
    assert build_adaptive(config, replace(offline, ensemble=1)).speeds == [1.0]
    assert adaptive.postfilter == WienerConfig()  # on by default
    assert build_adaptive(config, replace(offline, wiener=False)).postfilter is None
    checks = pipeline_config(checkpoint, steps=3, batch_size=2, min_similarity=0.0, min_periodicity=0.6)
    assert build_adaptive(checks, offline).purity.config.min_periodic_share == 0.6  # the periodicity check alone
    assert build_adaptive(checks, offline).purity.config.min_similarity == 0.0
    assert build_adaptive(replace(checks, adaptation=replace(checks.adaptation, min_periodicity=0.0)),
                          offline).purity is None  # both off: no filter
    threads = torch.get_num_threads()
    try:
        result = await process_file(meeting_wav, tmp_path, config, runtime, adaptive=adaptive)
    finally:
        runtime.close()
    assert torch.get_num_threads() == threads  # restored after adapting
    assert result.adaptation is not None and result.adaptation.steps == 3
    assert sorted(result.adaptation.speakers) == sorted(result.speakers) == ["SPEAKER_00", "SPEAKER_01"]
    for k in range(2):
        audio, rate = sf.read(str(tmp_path / "separated" / f"source_{k}.wav"))
        assert rate == 16000 and abs(len(audio) - result.duration_s * 16000) <= 1 and np.abs(audio).max() > 0
    info = json.loads((tmp_path / "separated" / "sources.json").read_text())
    assert [s["track"] for s in info["sources"]] == ["source_0", "source_1"]
    assert sorted(s["speaker"] for s in info["sources"]) == ["SPEAKER_00", "SPEAKER_01"]
    assert info["adaptation"]["steps"] == 3 and set(info["adaptation"]["speech_s"]) == set(result.speakers)
    assert info["ensemble_speeds"] == pytest.approx(np.linspace(0.92, 1.08, 10))  # no passes' budget: 10, +-8 %
    assert info["wiener_postfilter"]["window_s"] == 0.032 and info["wiener_postfilter"]["power"] == 2.0


async def test_live_session_streams_and_stores_source_tracks(checkpoint, meeting_wav, tmp_path):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    with run_server(tmp_path / "data", pipeline=pipeline_config(checkpoint)) as server:
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
            ready = json.loads(await ws.recv())
            assert ready["separator"] == "convtasnet"
            await ws.send(audio[: 4 * rate].astype("<f4").tobytes())
            await ws.send('{"type":"stop"}')
            announced, source_samples = [], {}
            async for message in ws:
                if isinstance(message, bytes):
                    header, samples = decode_audio_frame(message)
                    if header.track >= SOURCE_TRACK_BASE:
                        k = header.track - SOURCE_TRACK_BASE
                        assert header.start_sample == source_samples.get(k, 0)  # contiguous, in order
                        source_samples[k] = header.start_sample + header.sample_count
                else:
                    body = json.loads(message)
                    if body["type"] == "track" and body["kind"] == "source":
                        announced.append(body["speaker"])
        assert announced == ["source_0", "source_1"] and sorted(source_samples) == [0, 1]
        assert all(abs(n - 4 * 16000) <= 16 for n in source_samples.values())
        wav = await asyncio.to_thread(
            httpx.get, f"{server.base_url}/v1/sessions/{ready['session_id']}/tracks/source_1.wav",
            headers={"Authorization": f"Bearer {ready['token']}"})
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"


async def test_live_session_adapts_its_separator_in_the_background(checkpoint, meeting_wav, tmp_path):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    config = pipeline_config(checkpoint, steps=5, min_speech_s=1.0)
    with run_server(tmp_path / "data", pipeline=config) as server:
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
            json.loads(await ws.recv())
            for i in range(0, len(audio), rate):  # 1 s messages
                await ws.send(audio[i : i + rate].astype("<f4").tobytes())
            metrics = ""
            for _ in range(150):  # the adaptation runs beside the session; it would stop if the session ended
                metrics = (await asyncio.to_thread(httpx.get, server.base_url + "/metrics")).text
                if "rtsep_separator_adaptations_total 0.0" not in metrics:
                    break
                await asyncio.sleep(0.2)
            assert "rtsep_separator_adaptations_total" in metrics
            assert "rtsep_separator_adaptations_total 0.0" not in metrics
            await ws.send('{"type":"stop"}')
            source_samples = {}
            async for message in ws:
                if isinstance(message, bytes):
                    header, _ = decode_audio_frame(message)
                    if header.track >= SOURCE_TRACK_BASE:
                        k = header.track - SOURCE_TRACK_BASE
                        assert header.start_sample == source_samples.get(k, 0)  # contiguous across the switch
                        source_samples[k] = header.start_sample + header.sample_count
        assert all(abs(n - len(audio)) <= 16 for n in source_samples.values())


async def test_a_failing_separator_ends_that_session_with_1011_and_keeps_what_it_produced(checkpoint, meeting_wav,
                                                                                          tmp_path):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    config = pipeline_config(checkpoint, live=False)
    with run_server(tmp_path / "data", pipeline=config) as server:
        separator = server.services.separation.separator
        calls = {"n": 0}
        process = separator.process

        def breaks_after_a_while(chunks, states):
            calls["n"] += 1
            if calls["n"] > 20:
                raise RuntimeError("the separator broke")
            return process(chunks, states)

        separator.process = breaks_after_a_while
        async with websockets.connect(server.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
            ready = json.loads(await ws.recv())
            errors, source_samples = [], 0
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.send(audio[: 10 * rate].astype("<f4").tobytes())
                while True:  # no stop: today's bug was a session waiting forever after 16 steps
                    message = await asyncio.wait_for(ws.recv(), 30)
                    if isinstance(message, bytes):
                        header, _ = decode_audio_frame(message)
                        if header.track == SOURCE_TRACK_BASE:
                            source_samples = header.start_sample + header.sample_count
                    elif json.loads(message)["type"] == "error":
                        errors.append(json.loads(message))
        assert closed.value.rcvd.code == 1011
        assert [e["code"] for e in errors] == ["internal_error"] and "the separator broke" in errors[0]["message"]
        separator.process = process
        headers = {"Authorization": f"Bearer {ready['token']}"}
        status = {}
        for _ in range(100):
            status = (await asyncio.to_thread(httpx.get, f"{server.base_url}/v1/sessions/{ready['session_id']}",
                                              headers=headers)).json()
            if status["state"] != "live":
                break
            await asyncio.sleep(0.05)
        assert status["state"] == "failed" and status["outcome"] == "internal_error"
        health = (await asyncio.to_thread(httpx.get, f"{server.base_url}/healthz")).json()
        assert health["active_sessions"] == 0  # the slot is free
        wav = await asyncio.to_thread(httpx.get, f"{server.base_url}/v1/sessions/{ready['session_id']}/tracks/"
                                      "source_0.wav", headers=headers)
        assert wav.status_code == 200 and (len(wav.content) - 44) // 2 >= source_samples > 0  # nothing sent is lost
