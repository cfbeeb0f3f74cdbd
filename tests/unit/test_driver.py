"""SessionDriver (rtsep.driver) against fake runtimes: overflow, faults that end one session, the store writer,
adaptation results back on the event loop (the real runtimes are covered by the integration tests)."""

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import replace

import numpy as np
import pytest

from rtsep.audio import AudioChunk
from rtsep.diarize.online import DiarizationConfig, StepAnalysis
from rtsep.driver import SessionDriver, build_core
from rtsep.enhance.config import DenoiseConfig
from rtsep.errors import StoreError
from rtsep.metrics import Metrics
from rtsep.pipeline import PipelineConfig
from rtsep.protocol.messages import ErrorMessage, Gap
from rtsep.runtime.denoise import DenoiseRuntime
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.runtime.separation import SeparatedStep
from rtsep.separate.config import AdaptationConfig, SeparatorConfig
from rtsep.specs import ModelSpec
from rtsep.store.base import SessionInfo
from rtsep.store.sqlite import SqliteSessionStore
from rtsep.store.writer import StoreWriter
from rtsep.stream.render import INPUT_TRACK, track_kind
from rtsep.stream.session import ChunkReady


class FakeDiarization:
    """Answers 'no speech' for every step (``speech``: one talker throughout); ``gated`` holds the answers until
    released; ``fail_at`` raises from that step on (as a model that breaks); ``stall``: never answers."""

    def __init__(self, gated: bool = False, fail_at: int | None = None, stall: bool = False,
                 speech: bool = False) -> None:
        self.gated, self.fail_at, self.stall, self.speech = gated, fail_at, stall, speech
        self.pending: list[tuple[Future, object]] = []
        self.queue_depth = 0

    def submit(self, key, request) -> Future:
        future: Future = Future()
        if self.stall:
            self.pending.append((future, request))
        elif self.fail_at is not None and request.step_index >= self.fail_at:
            future.set_exception(RuntimeError("the VAD broke"))
        elif self.gated:
            self.pending.append((future, request))
        else:
            future.set_result(self.answer(request))
        return future

    def answer(self, r) -> StepAnalysis:
        if not self.speech:
            return StepAnalysis(r.step_index, r.start_sample, r.valid_samples, np.zeros(8, np.float32), None)
        embedding = np.ones(256, np.float32) / 16.0
        return StepAnalysis(r.step_index, r.start_sample, r.valid_samples, np.ones(8, np.float32), embedding, 1.0)

    def release_all(self) -> None:
        for future, r in self.pending:
            if not future.done():
                future.set_result(self.answer(r))


class FakeSeparation:
    """A separator runtime that returns its input as both sources, fails from step ``fail_at`` on, and adapts by
    handing the work to ``adapt_thread`` (a real thread, as the runtime's adaptation worker is)."""

    spec = ModelSpec(name="fake", sample_rate_hz=16000, step_samples=2048, lookahead_samples=0, num_outputs=2)
    supports_adaptation = True
    queue_depth = 0

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.adapt_calls: list = []
        self.adapt_keys: list = []
        self.adapt_speech: list = []
        self.ended_sessions: list = []

    def new_state(self):
        return object()

    def submit(self, key, request) -> Future:
        future: Future = Future()
        if self.fail_at is not None and request.step_index >= self.fail_at:
            future.set_exception(RuntimeError("the separator broke"))
        else:
            future.set_result(SeparatedStep(request.step_index, request.start_sample,
                                            np.stack([request.samples, request.samples])))
        return future

    def adapt(self, state, speech, config, stop=None, key=None) -> Future:
        future: Future = Future()
        self.adapt_calls.append((future, stop))
        self.adapt_keys.append(key)
        self.adapt_speech.append(speech)
        return future

    def end_session(self, key) -> None:
        self.ended_sessions.append(key)

    def purity_filter(self, config):
        return None


class Transport:
    def __init__(self) -> None:
        self.messages: list = []
        self.audio: list = []

    async def send_message(self, message) -> None:
        self.messages.append(message)

    async def send_audio(self, audio) -> None:
        self.audio.append(audio)


def make_config(**runtime) -> PipelineConfig:
    return PipelineConfig(diarization=DiarizationConfig(), runtime=RuntimeConfig(max_in_flight_steps=2, **runtime),
                          separator=SeparatorConfig(name=None))


async def open_driver(tmp_path, runtime, config=None, separation=None, session_id="s1", store=None, writer=None,
                      denoise=None, transport=None):
    config = config or make_config()
    store = store or SqliteSessionStore(tmp_path)
    writer = writer or StoreWriter(max_pending_writes=4)
    info = SessionInfo(session_id, "x", 0.0, "live", "test", 16000, 16000)
    await writer.call(lambda: store.create(info))
    metrics = Metrics()
    transport = transport or Transport()
    driver = SessionDriver(info=info, core=build_core(session_id, config, 8, separation), config=config,
                           runtime=runtime, store=store, writer=writer, metrics=metrics, transport=transport,
                           max_speakers=8, separation=separation, denoise=denoise)
    return driver, metrics, transport, store, writer


def chunk(i: int, value: float = 0.0) -> ChunkReady:
    return ChunkReady(AudioChunk(np.full(4096, value, np.float32), i * 4096, 16000), 4096)


async def test_drop_policy_drops_when_inference_is_behind_and_marks_the_gaps(tmp_path):
    runtime = FakeDiarization(gated=True)
    driver, metrics, transport, store, writer = await open_driver(tmp_path, runtime, make_config(overflow="drop"))
    for i in range(6):
        await asyncio.wait_for(driver.feed(chunk(i)), 1)  # never blocks
    assert driver.dropped_steps == 4 and len(runtime.pending) == 2
    runtime.release_all()
    done = await driver.finish()
    assert done.duration_s == pytest.approx(6 * 4096 / 16000)
    assert metrics.dropped_frames.labels("diarization")._value.get() == 4
    gaps = [m for m in transport.messages if isinstance(m, Gap)]
    assert [(g.path, g.sample, g.samples) for g in gaps] == [("diarization", i * 4096, 4096) for i in range(2, 6)]
    writer.close()


async def test_backpressure_policy_waits_and_drops_nothing(tmp_path):
    runtime = FakeDiarization(gated=True)
    driver, *_, writer = await open_driver(tmp_path, runtime, make_config(overflow="backpressure"))
    await driver.feed(chunk(0))
    await driver.feed(chunk(1))
    blocked = asyncio.create_task(driver.feed(chunk(2)))
    for _ in range(20):  # let the loop run: the third step waits for room
        await asyncio.sleep(0)
    assert not blocked.done() and len(runtime.pending) == 2
    runtime.release_all()
    await asyncio.wait_for(blocked, 1)
    runtime.release_all()
    await driver.finish()
    assert driver.dropped_steps == 0 and driver.processed_samples == 3 * 4096
    writer.close()


async def test_a_failing_diarization_model_ends_only_its_session_with_1011_and_keeps_its_output(tmp_path):
    store = SqliteSessionStore(tmp_path)
    writer = StoreWriter()
    broken, metrics, transport, _, _ = await open_driver(tmp_path, FakeDiarization(fail_at=3), store=store,
                                                         writer=writer)
    other, *_ = await open_driver(tmp_path, FakeDiarization(), session_id="s2", store=store, writer=writer)
    with pytest.raises(Exception):  # noqa: B017 - the failure reaches feed() once the consumer has seen it
        for i in range(20):
            await broken.feed(chunk(i, 0.1))
    for i in range(20):
        await other.feed(chunk(i, 0.1))
    await asyncio.wait_for(broken.end_requested.wait(), 5)
    assert broken.end_reason.close_code == 1011 and broken.end_reason.error_code == "internal_error"
    assert not broken.end_flush and "the VAD broke" in broken.end_reason.message
    errors = [m for m in transport.messages if isinstance(m, ErrorMessage)]
    assert [(e.code, e.close_code) for e in errors] == [("internal_error", 1011)]
    assert metrics.errors.labels("internal_error")._value.get() == 1
    await broken.abort("internal_error")
    assert store.get("s1").state == "failed" and broken.processed_samples == 3 * 4096
    for i in range(20, 24):
        await other.feed(chunk(i, 0.1))
    done = await other.finish()  # the other session is untouched
    assert done.duration_s == pytest.approx(24 * 4096 / 16000) and store.get("s2").state == "done"
    writer.close()


async def test_a_stalled_model_ends_the_session_instead_of_hanging_it(tmp_path):
    config = make_config(result_timeout_s=0.05)  # the driver's deadline for a result; nothing here is timed
    driver, _, transport, store, writer = await open_driver(tmp_path, FakeDiarization(stall=True), config)
    await driver.feed(chunk(0))
    await driver.feed(chunk(1))
    with pytest.raises(Exception, match="no result"):  # noqa: B017 - waits for room, wakes with the failure
        await driver.feed(chunk(2))
    assert driver.end_requested.is_set() and driver.end_reason.close_code == 1011
    await driver.abort("internal_error")
    assert store.get("s1").state == "failed"
    writer.close()


async def test_a_failing_separator_ends_the_session_with_1011_and_keeps_what_it_separated(tmp_path):
    separation = FakeSeparation(fail_at=4)
    config = replace(make_config(), separator=SeparatorConfig(name="fake"), adaptation=AdaptationConfig(live=False))
    driver, _, transport, store, writer = await open_driver(tmp_path, FakeDiarization(), config, separation)
    with pytest.raises(Exception, match="the separator broke"):  # noqa: B017
        for i in range(40):
            await driver.feed(chunk(i, 0.1))
    await driver.abort("internal_error")
    assert store.get("s1").state == "failed"
    assert store.read_track("s1", "source_0").size == 4 * 2048  # what was separated before the failure stays
    writer.close()


async def test_a_failed_store_write_is_a_store_error_for_the_client(tmp_path):
    store = SqliteSessionStore(tmp_path)

    keep_input = store.write_track

    def disk_full(session_id, track, *args):
        if track == INPUT_TRACK:  # the input's writes go through: the speaker tracks' fail (as announced)
            return keep_input(session_id, track, *args)
        raise StoreError("cannot write: [Errno 28] No space left on device")

    driver, metrics, transport, _, writer = await open_driver(tmp_path, FakeDiarization(speech=True), store=store)
    store.write_track = disk_full
    with pytest.raises(StoreError, match="No space left"):
        for i in range(40):
            await driver.feed(chunk(i, 0.5))
    # feed raises as soon as the core has failed; the end request (and the error message) follow on the loop
    await asyncio.wait_for(driver.end_requested.wait(), 10)
    assert driver.end_requested.is_set() and not driver.end_flush
    assert driver.end_reason.error_code == "store_error" and driver.end_reason.close_code == 1011
    assert [m.code for m in transport.messages if isinstance(m, ErrorMessage)] == ["store_error"]
    await writer.flush()  # every write queued so far is done and its failure delivered
    failures = writer.failures
    assert failures >= 1 and metrics.errors.labels("store_error")._value.get() == failures  # each one counted
    await driver.abort("store_error")
    assert store.get("s1").state == "failed" and store.get("s1").speakers == ["SPEAKER_00"]
    writer.close()


async def test_adaptation_results_come_back_on_the_event_loop(tmp_path):
    separation = FakeSeparation()
    config = replace(make_config(), separator=SeparatorConfig(name="fake"),
                     adaptation=AdaptationConfig(min_speech_s=0.1))
    driver, metrics, *_, writer = await open_driver(tmp_path, FakeDiarization(), config, separation)
    from rtsep.stream.adaptation import AdaptationMaterial

    driver._adapt(AdaptationMaterial(np.zeros(16000, np.float32), 16000, {"A": [(0.0, 0.5)], "B": [(0.5, 1.0)]}))
    driver.core.adaptation.busy = True  # as due() leaves it
    (future, stop), = separation.adapt_calls
    seen = asyncio.Event()
    loop_thread = threading.get_ident()
    calls = []
    original = driver.core.adaptation_done

    def on_loop(adopted):
        calls.append((threading.get_ident(), adopted))
        seen.set()
        return original(adopted)

    driver.core.adaptation_done = on_loop
    from rtsep.separate.adapt import AdaptReport

    worker = threading.Thread(target=lambda: future.set_result(AdaptReport(["A", "B"], {"A": 0.5, "B": 0.5})))
    worker.start()
    worker.join()
    await asyncio.wait_for(seen.wait(), 5)
    assert calls == [(loop_thread, True)] and metrics.separator_adaptations._value.get() == 1
    assert not driver.core.adaptation.busy and driver.core.adaptation.rounds == 1
    assert stop() is False
    await driver.finish()
    assert stop() is True  # a round still queued for this session would now be dropped before any work
    # the round is the session's in the server's queue, and the session's end takes any waiting round out of it
    assert separation.adapt_keys == [driver.session_id] and separation.ended_sessions == [driver.session_id]
    writer.close()


async def test_a_starting_round_asks_the_event_loop_for_the_latest_material(tmp_path):
    separation = FakeSeparation()
    config = replace(make_config(), separator=SeparatorConfig(name="fake"),
                     adaptation=AdaptationConfig(min_speech_s=0.1))
    driver, *_, writer = await open_driver(tmp_path, FakeDiarization(), config, separation)
    from rtsep.stream.adaptation import AdaptationMaterial

    queued = AdaptationMaterial(np.ones(16000, np.float32), 16000, {"A": [(0.0, 0.5)], "B": [(0.5, 1.0)]})
    newer = AdaptationMaterial(np.ones(32000, np.float32), 16000, {"A": [(0.0, 1.0)], "B": [(1.0, 2.0)]})
    driver._adapt(queued)
    (speech,) = separation.adapt_speech
    asked = []

    def latest():
        asked.append(threading.get_ident())
        return newer if len(asked) == 1 else None

    driver.core.latest_adaptation_material = latest
    got = await asyncio.to_thread(speech)  # as the adaptation thread calls it when the round starts
    assert asked == [threading.get_ident()]  # answered on the event loop
    assert {k: v.size for k, v in got.items()} == {"A": 16000, "B": 16000}  # the newer material's seconds
    got = await asyncio.to_thread(speech)  # nothing newer: the material it was queued with
    assert {k: v.size for k, v in got.items()} == {"A": 8000, "B": 8000}
    await driver.finish()
    writer.close()


async def test_at_the_end_the_final_speakers_get_tracks_rendered_from_the_stored_input(tmp_path):
    """One talker throughout: live SPEAKER_00, final SPEAKER_00 (the same name), its final track the input,
    loudness-normalised, stored beside the live track and the input, and listed by the final timeline."""
    from rtsep.stream.loudness import integrated_loudness
    from rtsep.stream.render import TracksConfig

    config = replace(make_config(), tracks=TracksConfig(loudness_lufs=-20.0))
    driver, metrics, transport, store, writer = await open_driver(tmp_path, FakeDiarization(speech=True), config)
    rng = np.random.default_rng(0)
    steps = 40
    audio = (rng.standard_normal(steps * 4096) * 0.05).astype(np.float32)
    for i in range(steps):
        await driver.feed(ChunkReady(AudioChunk(audio[i * 4096:(i + 1) * 4096], i * 4096, 16000), 4096))
    done = await driver.finish()
    assert done.speakers == ["SPEAKER_00"]
    final = store.final_timeline("s1")
    assert final["speakers"] == ["SPEAKER_00"]  # the live name kept
    assert final["tracks"] == {"SPEAKER_00": "/v1/sessions/s1/tracks/final-SPEAKER_00.wav"}
    assert store.track_names("s1") == ["SPEAKER_00", "final-SPEAKER_00", "input"]
    stored_input = store.read_track("s1", INPUT_TRACK)
    np.testing.assert_array_equal(stored_input, np.round(np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2"))
    track = store.read_track("s1", "final-SPEAKER_00").astype(np.float32) / 32768
    assert track.size == audio.size
    assert integrated_loudness(track, 16000) == pytest.approx(-20.0, abs=0.2)
    # inside the turn the final track is the input times one gain
    speech = slice(8192, audio.size - 8192)
    gain = np.median(track[speech] / np.where(audio[speech] == 0, 1, audio[speech]))
    np.testing.assert_allclose(track[speech], audio[speech] * gain, atol=3 / 32768)
    writer.close()


async def test_no_final_tracks_for_a_session_without_speech(tmp_path):
    driver, metrics, transport, store, writer = await open_driver(tmp_path, FakeDiarization(speech=False))
    for i in range(4):
        await driver.feed(chunk(i, 0.1))
    await driver.finish()
    assert store.final_timeline("s1")["tracks"] == {} and store.track_names("s1") == ["input"]


class HalvingDenoiser:
    """Returns half of its input ``lag`` samples late (all of it at the flush); ``fail_at``: raises on that block."""

    def __init__(self, lag: int = 700, fail_at: int | None = None) -> None:
        self.lag, self.fail_at, self.blocks = lag, fail_at, 0
        self.buffer = np.zeros(0, np.float32)

    def process(self, x):
        if self.fail_at is not None and self.blocks >= self.fail_at:
            raise RuntimeError("the denoiser broke")
        self.blocks += 1
        self.buffer = np.concatenate([self.buffer, 0.5 * x])
        ready = max(0, self.buffer.size - self.lag)
        out, self.buffer = self.buffer[:ready], self.buffer[ready:]
        return out

    def flush(self):
        out, self.buffer = self.buffer, np.zeros(0, np.float32)
        return out

    def close(self):
        pass


class HearingDiarization(FakeDiarization):
    """One talker throughout; keeps what it was given to hear."""

    def __init__(self) -> None:
        super().__init__(speech=True)
        self.heard: list = []

    def submit(self, key, request) -> Future:
        self.heard.append((request.start_sample, request.valid_samples, request.samples.copy()))
        return super().submit(key, request)


def block(i: int, value: float, size: int = 320) -> ChunkReady:
    return ChunkReady(AudioChunk(np.full(size, value, np.float32), i * size, 16000), size)


@pytest.mark.parametrize("tracks", [False, True])
async def test_with_denoise_the_diarizer_hears_the_denoised_input_at_its_positions(tmp_path, tracks):
    config = replace(make_config(), denoise=DenoiseConfig(enabled=True, tracks=tracks, block_samples=320))
    denoise = DenoiseRuntime(config.denoise, 16000, factory=HalvingDenoiser)
    diarization = HearingDiarization()
    driver, _, _, store, writer = await open_driver(tmp_path, diarization, config, denoise=denoise)
    seen = []  # what rtsep process's adaptive separator would adapt on
    driver.on_step = lambda step: seen.append(step.chunk.samples[: step.valid_samples])
    blocks = 40  # 12800 samples: three whole steps of 4096 and a last one of 512
    for i in range(blocks):
        await driver.feed(block(i, 0.1))
    done = await driver.finish()
    np.testing.assert_allclose(np.concatenate(seen), np.full(blocks * 320, 0.05 if tracks else 0.1, np.float32))
    assert done.duration_s == pytest.approx(blocks * 320 / 16000) and driver.processed_samples == blocks * 320
    assert [(start, valid) for start, valid, _ in diarization.heard] == [(0, 4096), (4096, 4096), (8192, 4096),
                                                                          (12288, 512)]
    for _, valid, samples in diarization.heard:
        np.testing.assert_allclose(samples[:valid], 0.05)  # denoised (halved), and not shifted by its lag
    track = store.read_track("s1", "SPEAKER_00")
    assert track.size == blocks * 320
    # the recording unless the tracks are denoised too (stored as 16-bit PCM)
    np.testing.assert_allclose(track / 32768, 0.05 if tracks else 0.1, atol=1 / 32768)
    denoise.close()
    writer.close()


async def test_a_failing_denoiser_ends_only_its_session_with_1011(tmp_path):
    made = iter([HalvingDenoiser(fail_at=5), HalvingDenoiser()])
    config = replace(make_config(), denoise=DenoiseConfig(enabled=True, block_samples=320))
    denoise = DenoiseRuntime(config.denoise, 16000, factory=lambda: next(made))
    store = SqliteSessionStore(tmp_path)
    writer = StoreWriter()
    broken, metrics, transport, _, _ = await open_driver(tmp_path, FakeDiarization(), config, store=store,
                                                         writer=writer, denoise=denoise)
    with pytest.raises(Exception, match="the denoiser broke"):  # noqa: B017 - reaches feed() or the end of input
        for i in range(200):
            await broken.feed(block(i, 0.1))
        await broken.finish()
    await asyncio.wait_for(broken.end_requested.wait(), 5)
    assert broken.end_reason.close_code == 1011 and broken.end_reason.error_code == "internal_error"
    errors = [m for m in transport.messages if isinstance(m, ErrorMessage)]
    assert [(e.code, e.close_code) for e in errors] == [("internal_error", 1011)]
    await broken.abort("internal_error")
    assert store.get("s1").state == "failed"
    other, *_ = await open_driver(tmp_path, FakeDiarization(), config, session_id="s2", store=store, writer=writer,
                                  denoise=denoise)
    for i in range(30):
        await other.feed(block(i, 0.1))
    done = await other.finish()  # the other session, on the same runtime, is untouched
    assert done.duration_s == pytest.approx(30 * 320 / 16000) and store.get("s2").state == "done"
    denoise.close()
class GatedStore(SqliteSessionStore):
    """A store whose writes wait until the test opens ``gate`` (a slow database), then log their commit."""

    def __init__(self, root, log: list) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.log = log

    def write_track(self, session_id, track, start_sample, samples):
        self.gate.wait()
        super().write_track(session_id, track, start_sample, samples)
        self.log.append(("committed", "track", track, start_sample + samples.size))

    def append_live_segment(self, session_id, speaker, start_s, end_s):
        self.gate.wait()
        super().append_live_segment(session_id, speaker, start_s, end_s)
        self.log.append(("committed", "segment", speaker, round(start_s, 3), round(end_s, 3)))

    def write_final(self, session_id, timeline):
        self.gate.wait()
        super().write_final(session_id, timeline)
        self.log.append(("committed", "final"))


class LoggingTransport(Transport):
    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log

    async def send_message(self, message) -> None:
        await super().send_message(message)
        self.log.append(("sent", message))

    async def send_audio(self, audio) -> None:
        await super().send_audio(audio)
        self.log.append(("sent audio", audio.track))


async def test_no_acknowledgement_reaches_the_client_before_its_commit_and_live_audio_is_not_held(tmp_path):
    from rtsep.protocol.messages import Segment, Stored, TimelineMessage

    log: list = []
    store = GatedStore(tmp_path, log)
    store.gate.set()  # the session's creation is not held
    config = replace(make_config(), separator=SeparatorConfig(name="fake"), adaptation=AdaptationConfig(live=False))
    driver, _, transport, _, writer = await open_driver(tmp_path, FakeDiarization(speech=True), config,
                                                        FakeSeparation(), store=store, writer=StoreWriter(1024),
                                                        transport=LoggingTransport(log))
    store.gate.clear()  # from here on every write waits: the database is slow
    for i in range(12):
        await driver.feed(chunk(i, 0.3))
    finishing = asyncio.create_task(driver.finish())
    for _ in range(50):  # let the loop run everything it can without the store
        await asyncio.sleep(0)
    assert transport.audio, "live audio frames wait for no commit"
    assert not any(isinstance(m, (Segment, Stored, TimelineMessage)) for m in transport.messages)
    assert not any(entry[0] == "committed" for entry in log) and not finishing.done()
    store.gate.set()
    await asyncio.wait_for(finishing, 10)

    committed_tracks: dict[str, int] = {}
    committed_segments: set = set()
    final_committed = False
    acknowledged = {"segment": 0, "stored": 0, "final": 0}
    for entry in log:
        if entry[0] == "committed":
            if entry[1] == "track":
                committed_tracks[entry[2]] = max(committed_tracks.get(entry[2], 0), entry[3])
            elif entry[1] == "segment":
                committed_segments.add(entry[2:])
            else:
                final_committed = True
        elif entry[0] == "sent" and isinstance(entry[1], Stored):
            m = entry[1]
            assert committed_tracks.get(m.speaker, 0) >= m.end_sample, (m, committed_tracks)
            acknowledged["stored"] += 1
        elif entry[0] == "sent" and isinstance(entry[1], Segment):
            m = entry[1]
            assert (m.speaker, m.start_s, m.end_s) in committed_segments, m
            acknowledged["segment"] += 1
        elif entry[0] == "sent" and isinstance(entry[1], TimelineMessage):
            assert final_committed
            acknowledged["final"] += 1
    assert acknowledged["segment"] >= 1 and acknowledged["final"] == 1
    # by the end every track is acknowledged whole (the last mark = the track's committed length)
    last_marks = {m.speaker: m.end_sample for m in transport.messages if isinstance(m, Stored)}
    # (the announced tracks: the stored input and the final speaker tracks are never sent, so never marked)
    sent_tracks = {name: end for name, end in committed_tracks.items() if track_kind(name) in ("live", "source")}
    assert last_marks == sent_tracks and set(last_marks) >= {"source_0", "source_1"}
    for name, end_sample in last_marks.items():
        assert store.read_track("s1", name).size == end_sample
    writer.close()
