"""The file transport: run the same session pipeline over an audio file at full speed (``rtsep process``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rtsep.audio import float_to_s16, wav_bytes
from rtsep.diarize.timeline import annotation_from_json, to_rttm
from rtsep.errors import ClientError
from rtsep.metrics import Metrics
from rtsep.pipeline import NullOutbox, PipelineConfig, build_separation
from rtsep.protocol.messages import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ, Start
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.runtime.separation import SeparationRuntime
from rtsep.separate.adapt import AdaptConfig, AdaptedSeparation, AdaptiveSeparator, AdaptReport
from rtsep.separate.postfilter import WienerConfig
from rtsep.sessions import SessionLimits, SessionManager
from rtsep.store.base import SessionStore
from rtsep.store.sqlite import SqliteSessionStore
from rtsep.stream.session import ChunkReady, StreamSession

BLOCK_S = 0.5

log = logging.getLogger(__name__)


@dataclass
class ProcessResult:
    session_id: str
    duration_s: float
    speakers: list[str]
    live: dict[str, Any]
    final: dict[str, Any]
    files: list[Path]
    adaptation: AdaptReport | None = None


def read_info(path: Path) -> sf._SoundFileInfo:
    if not path.is_file():  # libsndfile would only say "System error."
        raise ClientError(f"no such file: {path}" if not path.exists() else f"not a file: {path}",
                          error_code="bad_file")
    try:
        return sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise ClientError(f"cannot read audio file {path}: {exc}", error_code="bad_file") from exc


class _ForwardReader(sf.SoundFile):
    """Reads straight through: soundfile seeks back to its own position after every read (as ``sf.blocks``
    does), and a seek makes MP3's decoder lose its bit reservoir (damaged samples at each block's start and a
    libmpg123 error line on stderr for each)."""

    def seekable(self) -> bool:
        return False


def read_blocks(path: Path, block_samples: int) -> Iterator[np.ndarray]:
    """The file in blocks of ``block_samples`` frames, (frames, channels) float32, read straight through."""
    with _ForwardReader(str(path)) as f:
        while True:
            samples = f.read(block_samples, dtype="float32", always_2d=True)
            if not len(samples):
                return
            yield samples


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
) -> ProcessResult:
    """Run one session over ``path``. Sources come from ``separation`` (streamed with the session) or, after the
    session, from ``adaptive`` (fine-tuned on the file's own single-talker turns, then run over the file)."""
    info = read_info(path)
    rate = int(info.samplerate)
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise ClientError(f"{path}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtsep-process-") as scratch:
        manager = SessionManager(config=config, runtime=runtime, store=SqliteSessionStore(scratch), metrics=Metrics(),
                                 limits=SessionLimits(max_sessions=1, max_message_bytes=1 << 30),
                                 separation=separation)
        stream = StreamSession(manager.stream_config)
        start = Start(sample_rate=rate, encoding="pcm_f32le", channels=1, max_speakers=max_speakers, send_audio=False)
        stream.receive_text(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
        pipeline, _ = manager.open(start, NullOutbox(), "file")
        block = max(1, int(BLOCK_S * rate))
        session_audio: list[np.ndarray] = []  # the input at the session's rate, kept only for the adaptive separator

        async def feed(events: list) -> None:
            for event in events:
                if isinstance(event, ChunkReady):
                    if adaptive is not None:
                        session_audio.append(event.chunk.samples[: event.valid_samples].copy())
                    await pipeline.feed(event)

        for samples in read_blocks(path, block):
            await feed(stream.receive_samples(np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))))
            if progress is not None:
                progress(samples.shape[0] / rate)
        await feed(stream.finish())
        done = await pipeline.finish()
        manager.release(pipeline, "completed")
        sid = pipeline.session_id
        final = manager.store.final_timeline(sid) or {}
        live = pipeline.live_timeline()
        files = write_outputs(out_dir, manager.store, sid, live, final, pipeline.rate, done.duration_s)
        manager.store.close()
    report = None
    if adaptive is not None:
        audio = np.concatenate(session_audio) if session_audio else np.zeros(0, np.float32)
        stop = threading.Event()  # set when this task is cancelled (Ctrl-C): the thread stops at its next step
        try:
            result = await asyncio.to_thread(adaptive.run, audio, pipeline.rate, final.get("segments", []),
                                             adapt_progress, stop.is_set)
        finally:
            stop.set()
        files += write_separated(out_dir, result)
        report = result.report
    return ProcessResult(sid, done.duration_s, done.speakers, live, final, files, report)


def write_separated(out_dir: Path, result: AdaptedSeparation) -> list[Path]:
    """separated/source_<k>.wav (16-bit, the session's rate) and separated/sources.json (who is in which
    source, what the adaptation did)."""
    folder = out_dir / "separated"
    folder.mkdir(exist_ok=True)
    files = []
    for k, source in enumerate(result.sources):
        path = folder / f"source_{k}.wav"
        path.write_bytes(wav_bytes(float_to_s16(source), result.rate_hz))
        files.append(path)
    info = folder / "sources.json"
    info.write_text(json.dumps({
        "sources": [{"track": f"source_{k}", "speaker": spk} for k, spk in enumerate(result.speakers)],
        "adaptation": result.report.as_dict(),
        "ensemble_speeds": result.speeds,
        "wiener_postfilter": asdict(result.postfilter) if result.postfilter is not None else None,
    }, indent=1))
    return files + [info]


def write_outputs(out_dir: Path, store: SessionStore, session_id: str, live: dict, final: dict,
                  rate: int, duration_s: float) -> list[Path]:
    files = []
    tracks = out_dir / "tracks"
    tracks.mkdir(exist_ok=True)
    total = int(round(duration_s * rate))
    for name in store.track_names(session_id):
        pcm = store.read_track(session_id, name)
        assert pcm is not None
        padded = np.zeros(total, "<i2")  # every track spans exactly the whole session
        padded[: min(total, pcm.size)] = pcm[:total]
        if name.startswith("source_"):  # separated sources
            (out_dir / "separated").mkdir(exist_ok=True)
            path = out_dir / "separated" / f"{name}.wav"
        else:
            path = tracks / f"{name}.wav"
        path.write_bytes(wav_bytes(padded, rate))
        files.append(path)
    for kind, data in (("", final), ("live.", live)):
        json_path = out_dir / f"timeline.{kind}json"
        json_path.write_text(json.dumps(data, indent=1))
        rttm_path = out_dir / f"timeline.{kind}rttm"
        rttm_path.write_text(to_rttm(annotation_from_json(data)))
        files += [json_path, rttm_path]
    png = out_dir / "timeline.png"
    plot_timeline({"final": final, "live": live}, duration_s, png)
    files.append(png)
    return files


def plot_timeline(timelines: dict[str, dict], duration_s: float, path: Path, reference: dict | None = None) -> None:
    """A who-spoke-when picture: one row per speaker and timeline kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = dict(timelines)
    if reference is not None:
        rows = {"reference": reference, **rows}
    speakers = sorted({s["speaker"] for t in rows.values() for s in t.get("segments", [])})
    colours = {spk: plt.cm.tab10(i % 10) for i, spk in enumerate(speakers)}
    labels = [(kind, spk) for kind, t in rows.items() for spk in sorted({s["speaker"] for s in t.get("segments", [])})]
    fig, ax = plt.subplots(figsize=(12, 0.45 * max(len(labels), 2) + 1.2))
    for y, (kind, spk) in enumerate(labels):
        spans = [(s["start_s"], s["end_s"] - s["start_s"]) for s in rows[kind]["segments"] if s["speaker"] == spk]
        ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=colours[spk])
    ax.set_yticks(range(len(labels)), [f"{kind}: {spk}" for kind, spk in labels])
    ax.set_ylim(-0.8, len(labels) - 0.2)
    ax.invert_yaxis()
    ax.set_xlim(0, max(duration_s, 1.0))
    if not labels:
        ax.text(0.5, 0.5, "no speech found", transform=ax.transAxes, ha="center", va="center", fontsize=14)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("who spoke when")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_adaptive(config: PipelineConfig) -> AdaptiveSeparator | None:
    """The offline adaptive separator when the pipeline asks for Conv-TasNet with adaptation steps."""
    steps, batch = config.adapt_recipe()
    if config.separator != "convtasnet" or steps <= 0:
        return None
    from rtsep.separate.convtasnet import default_checkpoint_path, load_convtasnet

    checkpoint = config.separator_checkpoint or default_checkpoint_path()
    purity = None
    if (purity_config := config.purity_config()) is not None:
        from rtsep.separate.purity import PurityFilter

        purity = PurityFilter(purity_config, device=config.runtime.device)
    adapt = AdaptConfig(steps=steps, batch_size=batch, compile=config.adapt_compile)
    threads = config.adapt_threads or os.cpu_count() or 1
    model = load_convtasnet(checkpoint, config.separator_norm_memory_s)
    postfilter = WienerConfig() if config.offline_wiener else None
    return AdaptiveSeparator(model, adapt, purity, threads=threads, ensemble=config.offline_ensemble,
                             postfilter=postfilter)


def run_process(path: Path, out_dir: Path, config: PipelineConfig, show_progress: bool = True,
                max_speakers: int | None = None) -> ProcessResult:
    info = read_info(path)
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    adaptive = build_adaptive(config)
    separation = None if adaptive is not None else build_separation(config)
    try:
        with progress_bar(round(info.duration, 1), "s", path.name, show_progress) as bar:
            with progress_bar(config.adapt_recipe()[0], "step", "adapting separator",
                              show_progress and adaptive is not None, delay_s=0.5) as adapt_bar:
                return asyncio.run(process_file(
                    path, out_dir, config, runtime, lambda s: bar.update(round(s, 3)), max_speakers, separation,
                    adaptive, lambda step, si_snr_db: adapt_bar.update(1)))
    finally:
        runtime.close()
        if separation is not None:
            separation.close()


class LoggedProgress:
    """Progress for a log rather than a terminal: one line every ``interval_s`` and one at the end."""

    def __init__(self, total: float, unit: str, desc: str, interval_s: float = 30.0) -> None:
        self.total, self.unit, self.desc, self.interval_s = total, unit, desc, interval_s
        self.done = 0.0
        self._last_s = time.monotonic()

    def update(self, n: float) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last_s >= self.interval_s:
            self._last_s = now
            self._log()

    def _log(self) -> None:
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        log.info("%s: %g of %g %s%s", self.desc, round(self.done, 1), self.total, self.unit, share)

    def __enter__(self) -> LoggedProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.done and exc[0] is None:
            self._log()


def progress_bar(total: float, unit: str, desc: str, enabled: bool, delay_s: float = 0.0) -> Any:
    """A tqdm bar on a terminal; in a log (stderr not a terminal), a line every 30 s instead of one per update."""
    if enabled and not sys.stderr.isatty():
        return LoggedProgress(total, unit, desc)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, delay=delay_s)
