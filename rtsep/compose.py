"""Composition of the parts that sessions share: runtimes (models loaded once), the separator, the offline adaptive
separator, and the scratch store of ``rtsep process``. The server (rtsep.server) and the command line (rtsep.cli)
build what they run from here; nothing below this layer loads a model or picks a store."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rtsep.metrics import Metrics
from rtsep.offline import OfflineConfig
from rtsep.pipeline import PipelineConfig
from rtsep.runtime.denoise import DenoiseRuntime
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.runtime.pyannote import PyannoteDiarizationRuntime
from rtsep.runtime.separation import SeparationRuntime
from rtsep.separate.adapt import AdaptConfig, AdaptiveSeparator
from rtsep.separate.base import create_separator
from rtsep.separate.postfilter import WienerConfig
from rtsep.sessions import SessionLimits, SessionManager
from rtsep.store.base import SessionStore, VoiceRecord
from rtsep.store.factory import StoreLocation, open_voice_store
from rtsep.store.sqlite import SqliteSessionStore
from rtsep.store.writer import StoreWriter
from rtsep.transport.file import ProcessResult, progress_bar, read_info, run_file_session, set_total


def build_separation(config: PipelineConfig) -> SeparationRuntime | None:
    """The configured separator, loaded once for every session (None: tracks are routed by speaker)."""
    if config.separator.name is None:
        return None
    separator = create_separator(config.separator.name, **config.separator.options())
    return SeparationRuntime(config.runtime, separator, adaptation_cpu_share=config.adaptation.cpu_share,
                             adaptation_max_queued=config.adaptation.max_queued, gather_s=config.separator.gather_s,
                             adaptation_yield_backlog_s=config.adaptation.yield_backlog_s)


def build_denoise(config: PipelineConfig) -> DenoiseRuntime | None:
    """The denoise runtime with ``--denoise`` (its native library loaded once, now: a missing package is a clear
    error at start-up), else None."""
    if not config.denoise.enabled:
        return None
    return DenoiseRuntime(config.denoise, config.diarization.sample_rate_hz)


def build_diarization(config: PipelineConfig, metrics: Metrics | None = None
                      ) -> DiarizationRuntime | PyannoteDiarizationRuntime:
    """The configured diarization runtime (``[diarization] backend``), with the final pipeline if one is set."""
    step_s = config.diarization.step_s
    on_batch = (lambda size, seconds: metrics.observe_batch(size, seconds, step_s)) if metrics is not None else None
    diarization = config.diarization
    if diarization.backend == "pyannote":
        from rtsep.runtime.pyannote import load_pyannote_runtime

        return load_pyannote_runtime(config.runtime, diarization, on_batch=on_batch)
    final = None
    if diarization.final_pipeline:
        from rtsep.runtime.pyannote import load_final_pipeline

        final = load_final_pipeline(diarization.final_pipeline, config.runtime.device)
    overlap = None
    if diarization.overlap.enabled and final is None:  # (a final pipeline makes its own overlap-aware timeline)
        from rtsep.runtime.overlap import OverlapDetector

        overlap = OverlapDetector.load(diarization.overlap.weights, config.runtime.device)
    return DiarizationRuntime(config.runtime, diarization, on_batch=on_batch, final_pipeline=final,
                              overlap_detector=overlap)


def cpu_times() -> tuple[float, float] | None:
    """(busy, idle) CPU time of the whole machine so far, in clock ticks (Linux /proc/stat); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [float(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)
    return sum(ticks) - idle, idle


def free_cores(cores: int, interval_s: float = 0.25, times: Callable[[], tuple[float, float] | None] = cpu_times,
               wait: Callable[[float], None] = time.sleep) -> int:
    """How many of ``cores`` the rest of the machine leaves idle, from its CPU time over ``interval_s``: at least
    1, all of them when that cannot be read. On a busy machine a second torch thread does not help: the threads
    wait for each other at every operation (one adaptation step took 12.9 s on two threads against 2.1 s on one,
    with the machine's load average at 7; bench/RESULTS.md)."""
    before = times()
    if before is None:
        return cores
    wait(interval_s)
    after = times()
    if after is None:
        return cores
    busy, idle = after[0] - before[0], after[1] - before[1]
    if busy + idle <= 0:
        return cores
    return max(1, min(cores, round(cores * idle / (busy + idle))))


def build_adaptive(config: PipelineConfig, offline: OfflineConfig) -> AdaptiveSeparator | None:
    """The offline adaptive separator when the pipeline asks for Conv-TasNet with adaptation steps."""
    steps, batch = config.adapt_recipe()
    if config.separator.name != "convtasnet" or steps <= 0:
        return None
    from rtsep.separate.convtasnet import default_checkpoint_path, load_convtasnet

    checkpoint = config.separator.checkpoint or default_checkpoint_path()
    purity = None
    if (purity_config := config.purity_config()) is not None:
        from rtsep.separate.purity import PurityFilter

        purity = PurityFilter(purity_config, device=config.runtime.device)
    adapt = AdaptConfig(steps=steps, batch_size=batch, compile=offline.adapt_compile,
                        patience_steps=offline.adapt_patience_steps)
    threads = offline.adapt_threads or free_cores(os.cpu_count() or 1)
    model = load_convtasnet(checkpoint, config.separator.norm_memory_s)
    postfilter = WienerConfig() if offline.wiener else None
    return AdaptiveSeparator(model, adapt, purity, threads=threads, ensemble=offline.ensemble,
                             postfilter=postfilter, budget=offline.budget())


async def process_file(
    path: Path,
    out_dir: Path,
    config: PipelineConfig,
    runtime: DiarizationRuntime,
    progress: Callable[[float], None] | None = None,
    max_speakers: int | None = None,
    separation: SeparationRuntime | None = None,
    adaptive: AdaptiveSeparator | None = None,
    adapt_progress: Callable[[int, float], None] | None = None,
    adapt_plan: Callable[[int], None] | None = None,
    denoise: DenoiseRuntime | None = None,
    voices: list[str] | str | None = None,
    voice_store: SessionStore | None = None,
) -> ProcessResult:
    """One ``rtsep process`` session over ``path`` with the given runtimes, in a scratch store that is removed
    afterwards (what it produced is written to ``out_dir``); ``voices`` are read from ``voice_store``."""
    with tempfile.TemporaryDirectory(prefix="rtsep-process-") as scratch:
        store = await asyncio.to_thread(SqliteSessionStore, scratch)
        writer = StoreWriter()
        manager = SessionManager(config=config, runtime=runtime, store=store, metrics=Metrics(),
                                 limits=SessionLimits(max_sessions=1, max_message_bytes=1 << 30),
                                 writer=writer, separation=separation, denoise=denoise, voice_store=voice_store)
        try:
            return await run_file_session(path, out_dir, manager, progress, max_speakers, adaptive, adapt_progress,
                                          adapt_plan, voices)
        finally:
            await asyncio.to_thread(writer.close)
            await asyncio.to_thread(store.close)


def run_process(path: Path, out_dir: Path, config: PipelineConfig, offline: OfflineConfig | None = None,
                show_progress: bool = True, max_speakers: int | None = None, voices: list[str] | str | None = None,
                voice_store: StoreLocation | None = None) -> ProcessResult:
    """``voices``: name the speakers after these enrolled voices of the store at ``voice_store``."""
    info = read_info(path)
    store = open_voice_store(voice_store) if voices is not None and voice_store is not None else None
    runtime = build_diarization(config)
    separation = None
    denoise = None
    try:
        denoise = build_denoise(config)
        adaptive = build_adaptive(config, offline or OfflineConfig())
        separation = None if adaptive is not None else build_separation(config)
        # under a time budget the step count is known after the first steps (AdaptiveSeparator.run's on_plan)
        steps = config.adapt_recipe()[0] if adaptive is None or adaptive.budget.adapt_rtf <= 0 else None
        with progress_bar(round(info.duration, 1), "s", path.name, show_progress) as bar:
            with progress_bar(steps, "step", "adapting separator",
                              show_progress and adaptive is not None, delay_s=0.5) as adapt_bar:
                return asyncio.run(process_file(
                    path, out_dir, config, runtime, lambda s: bar.update(round(s, 3)), max_speakers, separation,
                    adaptive, lambda step, si_snr_db: adapt_bar.update(1), lambda total: set_total(adapt_bar, total),
                    denoise, voices, store))
    finally:
        if store is not None:
            store.close()
        runtime.close()
        if separation is not None:
            separation.close()
        if denoise is not None:
            denoise.close()


def enroll_file(location: StoreLocation, config: PipelineConfig, name: str, path: Path,
                replace: bool = False) -> VoiceRecord:
    """``rtsep enroll``: the embedding of the voice in ``path`` into the store at ``location`` (the one ``rtsep
    serve`` uses with the same --store / --data-dir), with the diarizer's own models; the audio is not kept."""
    import time

    from rtsep.diarize.embedding import load_speaker_encoder
    from rtsep.diarize.vad import load_silero_vad
    from rtsep.diarize.voices import decode_clip, enrollment_embedding
    from rtsep.errors import VoiceExists
    from rtsep.store.base import check_voice_name
    from rtsep.transport.file import read_info as check_file

    check_voice_name(name)
    check_file(path)
    store = open_voice_store(location)
    try:
        if not replace and store.get_voice(name) is not None:
            raise VoiceExists(f"a voice named {name!r} is enrolled already in {location.describe()}; "
                              "--replace replaces it")
        voices, diar = config.voices, config.diarization
        samples = decode_clip(path.read_bytes(), voices.max_enroll_s)
        embedding, speech_s = enrollment_embedding(samples, load_silero_vad(), load_speaker_encoder(),
                                                   window_samples=diar.embedding_window_samples,
                                                   min_speech_s=voices.min_enroll_speech_s, vad_onset=diar.vad_onset)
        record = VoiceRecord(name, embedding, speech_s, time.time())
        store.put_voice(record, replace)
        return record
    finally:
        store.close()
