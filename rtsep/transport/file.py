"""The file transport: one session over an audio file at full speed (``rtsep process``), through the same session
manager, driver and runtimes as a live session; the composition root (rtsep.compose) builds them."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from rtsep.audio import float_to_s16, wav_bytes
from rtsep.diarize.timeline import annotation_from_json, to_rttm
from rtsep.driver import NullSink
from rtsep.errors import ClientError, StoreError
from rtsep.pipeline import PipelineConfig
from rtsep.protocol.messages import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ, Start
from rtsep.separate.adapt import AdaptedSeparation, AdaptiveSeparator, AdaptReport
from rtsep.sessions import SessionManager
from rtsep.store.base import SessionStore
from rtsep.stream.attribution import Attribution, attribute
from rtsep.stream.render import final_tracks, segment_spans, speaker_of, track_kind
from rtsep.stream.session import ChunkReady, StreamSession

BLOCK_S = 0.5

log = logging.getLogger(__name__)


@dataclass
class ProcessResult:
    session_id: str
    duration_s: float
    speakers: list[str]  # the final timeline's (one track each in tracks/)
    live: dict[str, Any]
    final: dict[str, Any]
    files: list[Path]
    adaptation: AdaptReport | None = None
    live_speakers: list[str] = field(default_factory=list)  # the live speakers (tracks/live/)


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


async def run_file_session(
    path: Path,
    out_dir: Path,
    manager: SessionManager,
    progress: Callable[[float], None] | None = None,
    max_speakers: int | None = None,
    adaptive: AdaptiveSeparator | None = None,
    adapt_progress: Callable[[int, float], None] | None = None,
    adapt_plan: Callable[[int], None] | None = None,
    voices: list[str] | str | None = None,
) -> ProcessResult:
    """Run one session over ``path`` through ``manager`` (its runtimes, its store), as a live session runs. Sources
    come from the manager's separation runtime (streamed with the session) or, after the session, from
    ``adaptive`` (fine-tuned on the file's own single-talker turns, then run over the file)."""
    info = read_info(path)
    rate = int(info.samplerate)
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise ClientError(f"{path}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz")
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = StreamSession(manager.stream_config)
    start = Start(sample_rate=rate, encoding="pcm_f32le", channels=1, max_speakers=max_speakers, send_audio=False,
                  voices=voices)
    stream.receive_text(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
    pipeline, _ = await manager.open(start, NullSink(), "file")
    block = max(1, int(BLOCK_S * rate))
    # the steps' audio at the session's rate (denoised with --denoise-tracks), kept only for the adaptive separator
    session_audio: list[np.ndarray] = []
    if adaptive is not None:
        pipeline.on_step = lambda step: session_audio.append(step.chunk.samples[: step.valid_samples].copy())

    async def feed(events: list) -> None:
        for event in events:
            if isinstance(event, ChunkReady):
                await pipeline.feed(event)

    try:
        for samples in read_blocks(path, block):
            await feed(stream.receive_samples(np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))))
            if progress is not None:
                progress(samples.shape[0] / rate)
        await feed(stream.finish())
        done = await pipeline.finish()
    except BaseException:
        if pipeline.info.state == "live":
            await asyncio.shield(pipeline.abort("internal_error"))
        raise
    finally:
        manager.release(pipeline, pipeline.info.outcome or "internal_error")
    sid = pipeline.session_id
    store = manager.store
    final = await manager.writer.call(lambda: store.final_timeline(sid)) or {}
    live = pipeline.live_timeline()
    files = await asyncio.to_thread(write_outputs, out_dir, store, sid, live, final, pipeline.rate, done.duration_s)
    report = None
    if adaptive is not None:
        audio = np.concatenate(session_audio) if session_audio else np.zeros(0, np.float32)
        stop = threading.Event()  # set when this task is cancelled (Ctrl-C): the thread stops at its next step
        try:
            result = await asyncio.to_thread(adaptive.run, audio, pipeline.rate, final.get("segments", []),
                                             adapt_progress, stop.is_set, adapt_plan)
        finally:
            stop.set()
        files += await asyncio.to_thread(write_separated, out_dir, result)
        report = result.report
        embed = getattr(manager.runtime, "embed_windows", None)
        if manager.config.attribution.enabled and embed is not None and final.get("segments"):
            written = await asyncio.to_thread(write_attributed, out_dir, audio, result.sources, pipeline.rate, final,
                                              manager.config, embed, round(done.duration_s * pipeline.rate))
            files += [p for p in written if p not in files]  # the tracks were written before: the same paths
    return ProcessResult(sid, done.duration_s, list(final.get("speakers", [])), live, final, files, report,
                         list(done.speakers))


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


def write_attributed(out_dir: Path, audio: np.ndarray, sources: np.ndarray, rate: int, final: dict,
                     config: PipelineConfig, embed: Callable[[np.ndarray], np.ndarray], total: int) -> list[Path]:
    """tracks/<speaker>.wav again, now carrying the separated sources where the attribution
    (rtsep.stream.attribution) is sure who is in which (the gated input elsewhere), and tracks/attribution.json
    (how each block was decided)."""
    audio = np.asarray(audio, np.float32)
    fitted = np.zeros(total, np.float32)
    fitted[: min(total, audio.size)] = audio[:total]
    separated = np.zeros((len(sources), total), np.float32)
    for k, source in enumerate(sources):
        separated[k, : min(total, source.size)] = source[:total]
    attribution = attribute(fitted, separated, rate, segment_spans(final["segments"], rate), config.attribution,
                            embed)
    log.info("attribution of the separated sources per speaker and block: %s", attribution.summary())
    tracks = out_dir / "tracks"
    tracks.mkdir(exist_ok=True)
    files = []
    for track in final_tracks(fitted, rate, final["segments"], config.tracks, total, sources=separated,
                              attribution=attribution, source_fade_s=config.attribution.crossfade_s):
        path = tracks / f"{track.speaker}.wav"
        path.write_bytes(wav_bytes(float_to_s16(track.samples), rate))
        files.append(path)
    info = tracks / "attribution.json"
    info.write_text(json.dumps(attribution_json(attribution, rate), indent=1))
    return files + [info]


def attribution_json(attribution: Attribution, rate: int) -> dict[str, Any]:
    """The attribution's decisions as JSON: per block, its span and each active speaker's source (null: input)."""
    def number(value: float) -> float | None:
        return round(value, 4) if np.isfinite(value) else None

    return {"summary": attribution.summary(), "blocks": [
        {"start_s": round(d.block.start_sample / rate, 3), "end_s": round(d.block.end_sample / rate, 3),
         "speakers": {spk: {"source": a.source, "reason": a.reason, "similarity": number(a.similarity),
                            "margin": number(a.margin)} for spk, a in d.assignments.items()}}
        for d in attribution.decisions]}


def write_outputs(out_dir: Path, store: SessionStore, session_id: str, live: dict, final: dict,
                  rate: int, duration_s: float) -> list[Path]:
    """tracks/<speaker>.wav: one per final speaker (as named in timeline.json, loudness-normalised);
    tracks/live/<speaker>.wav: the live speaker tracks (as a live client received them); separated/source_<k>.wav:
    the separated sources; the timelines (JSON, RTTM) and their picture. The input is not written back."""
    files = []
    tracks = out_dir / "tracks"
    tracks.mkdir(exist_ok=True)
    total = int(round(duration_s * rate))
    for name in store.track_names(session_id):
        kind = track_kind(name)
        if kind == "input":
            continue
        pcm = store.read_track(session_id, name)
        if pcm is None:
            raise StoreError(f"track {name} of session {session_id} is listed but cannot be read")
        padded = np.zeros(total, "<i2")  # every track spans exactly the whole session
        padded[: min(total, pcm.size)] = pcm[:total]
        if kind == "source":
            folder = out_dir / "separated"
        elif kind == "live":
            folder = tracks / "live"
        else:
            folder = tracks
        folder.mkdir(exist_ok=True)
        path = folder / f"{speaker_of(name)}.wav"
        path.write_bytes(wav_bytes(padded, rate))
        files.append(path)
    if "tracks" in final:  # the server's URLs of the final tracks: here, the files written above
        final = {**final, "tracks": {speaker: f"tracks/{speaker}.wav" for speaker in final["tracks"]}}
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


def progress_bar(total: float | None, unit: str, desc: str, enabled: bool, delay_s: float = 0.0) -> Any:
    """A tqdm bar on a terminal; in a log (stderr not a terminal), a line every 30 s instead of one per update.
    ``total`` None: not known yet (set_total sets it later)."""
    if enabled and not sys.stderr.isatty():
        return LoggedProgress(total, unit, desc)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, delay=delay_s)


def set_total(bar: Any, total: float) -> None:
    """Give a progress_bar its total once known (or when it changed, e.g. a run that ended early)."""
    bar.total = total
    if hasattr(bar, "refresh"):  # tqdm redraws; LoggedProgress shows it in its next line
        bar.refresh()
