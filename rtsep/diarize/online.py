"""Online diarization of one session (sans-I/O, numpy only).

Input: one :class:`StepAnalysis` per step (voice-activity probabilities for each 32 ms frame, and a
speaker embedding of the window that ends with the step when it holds speech). Output: speaker
started/stopped events, closed live segments, and per-frame labels for routing audio to tracks.

The label of a step may be decided with ``lookahead_steps`` later embeddings (whose windows are
better centred on it); that adds ``lookahead_steps * step`` to the label latency.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from rtsep.diarize.clustering import ClusteringConfig, OnlineClustering
from rtsep.diarize.overlap import OverlapConfig
from rtsep.diarize.pyannote_stream import PyannoteStreamConfig
from rtsep.stream.turns import (  # noqa: F401 - the diarizer's input and output types, re-exported
    DiarizationEvent,
    FrameLabels,
    NewSpeaker,
    SegmentClosed,
    SpeakerStarted,
    SpeakerStopped,
    StepAnalysis,
    speaker_name,
)

BACKENDS = ("embedded", "pyannote")


@dataclass(frozen=True)
class DiarizationConfig:
    """The embedded default diarizer: silero-vad + resemblyzer embeddings + online clustering."""

    sample_rate_hz: int = 16000
    frame_samples: int = 512  # VAD frame (fixed by silero-vad at 16 kHz)
    frames_per_step: int = 8  # step = 4096 samples = 256 ms
    embedding_frames: int = 100  # mel frames per embedding window = 1.0 s of speech (shorter lags less at turns)
    # labels are decided when their step is analysed (worst-case latency one step, 256 ms); 1 decides them with
    # the next step's embedding too: live DER 18.5 % -> 11.9 % on the sample for +256 ms (bench/RESULTS.md)
    lookahead_steps: int = 0
    # speech when silero's probability reaches the onset, until it falls under the offset; chosen on the meeting set's
    # dev split (real voices, 5 conditions): 0.5 / 0.35 missed soft and short turns (final DER 48.8 -> 43.9 % pooled
    # there; test 43.1 -> 40.1 %, live 46.4 -> 41.4 %; bench/RESULTS.md "Diarization on many voices")
    vad_onset: float = 0.25
    vad_offset: float = 0.15
    # the final timeline's gap: speech frames of one speaker this close (frames) are one turn (160 ms)
    hangover_frames: int = 5
    # live turns: non-speech frames before a live turn is closed; a shorter hole inside a turn stays part of it.
    # Its end is reported at worst (live_hangover_frames + 8) * 32 ms after it (the `stopped` event): 7 keeps that
    # within 0.5 s with the server's ~20 ms; chosen on the meeting set's dev split (live DER 49.0 -> 47.3 % pooled
    # there, test 41.4 -> 40.3 %; longer ones gain more but report turn ends later: bench/RESULTS.md "The live
    # timeline on dev")
    live_hangover_frames: int = 7
    min_embed_speech_frames: int = 2  # speech frames in the step needed to compute an embedding
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    # the final timeline (rtsep.diarize.offline.final_segments, at session end), chosen on the meeting set's dev
    # split (bench/RESULTS.md "The final timeline chosen on dev"): pooled final DER 43.9 % -> 24.2 % there
    final_average_radius_steps: int = 4  # each step embedding averaged with those this many steps either side
    # "spectral": normalised-Laplacian spectral clustering, the speaker count from the largest eigengap (dev 24.0 %);
    # "ahc": average linkage cut at final_distance_threshold (the former default; dev 36.9 %, 32.3 % at its best, 0.25)
    final_clustering: str = "spectral"
    final_distance_threshold: float = 0.32  # ahc: cosine distance at which clusters stop merging
    final_spectral_pruning: float = 0.15  # spectral: share of each embedding's most similar others kept as edges
    # spectral: and at least this many of them: four averaging windows (2 * 4 + 1 steps each), so that a short session
    # (the 30 s sample: 88 embeddings) is not cut into runs of neighbouring steps (dev: no change up to 27, +0.2 at 36)
    final_spectral_min_neighbours: int = 36
    final_min_cluster_steps: int = 12  # clusters with less speech (~3 s) fold into the nearest speaker
    # sessions shorter than this keep the former clustering (ahc at final_distance_threshold, no averaging): the
    # settings above were chosen on meetings of 71-119 s; on 20-30 s the eigengap is unreliable (bench/RESULTS.md)
    final_short_session_s: float = 60.0
    # None: each speech frame takes the cluster of the nearest embedding; a number: Viterbi over the frames'
    # similarities to the cluster centroids, this much similarity lost per speaker change (dev: 0.3 points better at
    # 0.5, under the 1 point a step had to win to be turned on)
    final_switch_penalty: float | None = None
    # a speaker's pauses shorter than this are filled (pyannote's min_duration_off): silero leaves holes inside
    # turns that the reference (pauses < 0.3 s bridged) counts as speech; dev: 43.9 -> 36.9 % alone
    final_min_gap_s: float = 0.75
    final_min_duration_on_s: float = 0.0  # final turns shorter than this are dropped (dev: no change at 0.3 s)
    embedding_source: str = "speech"  # "speech": the session's most recent speech only; "window": the raw window
    min_embed_speech_s: float = 0.5  # speech needed in the buffer before an embedding is computed
    speech_reset_gap_s: float | None = None  # a pause longer than this empties the speech buffer
    # the inference worker starts a tick no earlier than this after the oldest waiting step arrived, so that the
    # steps of sessions a few ms apart share one forward of the speaker encoder (batch 1: ~20 ms a window on this
    # machine, batch 8: ~8 ms); it adds at most this to labels (rtsep.runtime.worker; bench/RESULTS.md "Capacity
    # with separation on")
    gather_s: float = 0.05
    # "embedded": the above (silero-vad + resemblyzer); "pyannote": streaming diarization on local pyannote.audio
    # checkpoints (``segmentation``, ``embedding``; settings in [pyannote], rtsep.diarize.pyannote_stream)
    backend: str = "embedded"
    segmentation: str | None = None  # pyannote: a segmentation checkpoint (file, or directory with pytorch_model.bin)
    embedding: str | None = None  # pyannote: a speaker-embedding checkpoint (likewise)
    # a local pyannote.audio pipeline directory (config.yaml + its checkpoints): the final timeline comes from
    # pyannote.audio.Pipeline on the whole session's audio instead of rtsep's own (with either backend)
    final_pipeline: str | None = None
    pyannote: PyannoteStreamConfig = field(default_factory=PyannoteStreamConfig)
    # [overlap]: the overlapped-speech detector and a second speaker in the final timeline (rtsep.diarize.overlap)
    overlap: OverlapConfig = field(default_factory=OverlapConfig)

    def __post_init__(self) -> None:
        from rtsep.errors import ConfigError

        if self.backend not in BACKENDS:
            raise ConfigError(f"[diarization] backend (--diarizer) must be one of {BACKENDS}, got {self.backend!r}")
        if self.embedding_source not in ("speech", "window"):
            raise ConfigError(f"embedding_source must be 'speech' or 'window', got {self.embedding_source!r}")
        if not 0 <= self.lookahead_steps <= 4:
            raise ConfigError("lookahead_steps must be within 0..4")
        if self.final_clustering not in ("ahc", "spectral"):
            raise ConfigError(f"final_clustering must be 'ahc' or 'spectral', got {self.final_clustering!r}")
        if not 0 < self.final_spectral_pruning <= 1:
            raise ConfigError("final_spectral_pruning must be within (0, 1]")
        if self.final_spectral_min_neighbours < 0 or self.final_short_session_s < 0:
            raise ConfigError("final_spectral_min_neighbours and final_short_session_s must be >= 0")
        if self.final_average_radius_steps < 0 or self.final_min_gap_s < 0 or self.final_min_duration_on_s < 0:
            raise ConfigError("final_average_radius_steps, final_min_gap_s and final_min_duration_on_s must be >= 0")
        if self.final_switch_penalty is not None and self.final_switch_penalty < 0:
            raise ConfigError("final_switch_penalty must be >= 0 (or unset)")
        if self.hangover_frames < 0 or self.live_hangover_frames < 0:
            raise ConfigError("hangover_frames and live_hangover_frames must be >= 0")
        if not 0 <= self.gather_s <= 1.0:
            raise ConfigError(f"[diarization] gather_s must be within [0, 1] s, got {self.gather_s!r}")

    @property
    def min_embed_speech_samples(self) -> int:
        return round(self.min_embed_speech_s * self.sample_rate_hz)

    @property
    def step_samples(self) -> int:
        frames = self.pyannote.step_frames if self.backend == "pyannote" else self.frames_per_step
        return self.frame_samples * frames

    @property
    def step_s(self) -> float:
        return self.step_samples / self.sample_rate_hz

    @property
    def embedding_window_samples(self) -> int:
        from rtsep.diarize.embedding import window_samples_for_frames

        return window_samples_for_frames(self.embedding_frames)


@dataclass
class StepRecord:
    """What the final re-clustering needs of every step."""

    step_index: int
    start_sample: int
    valid_samples: int
    speech: np.ndarray  # (frames,) bool
    embedding: np.ndarray | None


class OnlineDiarizer:
    def __init__(self, config: DiarizationConfig, max_speakers: int | None = None) -> None:
        cluster_cfg = config.clustering
        if max_speakers is not None:
            from dataclasses import replace

            cluster_cfg = replace(cluster_cfg, max_speakers=min(max_speakers, cluster_cfg.max_speakers))
        self.config = config
        self.clustering = OnlineClustering(cluster_cfg)
        self.records: list[StepRecord] = []
        self._pending: deque[StepRecord] = deque()
        self._embedding_labels: dict[int, int] = {}
        self._in_speech = False  # VAD hysteresis state
        self._speech_history: deque[bool] = deque(maxlen=self._window_frames())
        self._active: int | None = None
        self._run_start = 0
        self._last_speech_end = 0
        self._silence_frames = 0
        self._known_speakers = 0

    def _window_frames(self) -> int:
        return max(1, self.config.embedding_window_samples // self.config.frame_samples)

    # --- input ---

    def push(self, step: StepAnalysis) -> list[DiarizationEvent]:
        cfg = self.config
        speech = self._hysteresis(step)
        record = StepRecord(step.step_index, step.start_sample, step.valid_samples, speech, step.embedding)
        self.records.append(record)
        events: list[DiarizationEvent] = []
        if step.embedding is not None:
            if step.embedding_speech_s >= 0:
                ratio = min(1.0, step.embedding_speech_s * cfg.sample_rate_hz / cfg.embedding_window_samples)
            else:
                ratio = float(np.mean(self._speech_history)) if self._speech_history else 0.0
            label = self.clustering.assign(step.embedding, ratio)
            if label is not None:
                self._embedding_labels[step.step_index] = label
                while self._known_speakers < self.clustering.num_speakers:
                    events.append(NewSpeaker(self._known_speakers))
                    self._known_speakers += 1
        self._pending.append(record)
        while len(self._pending) > cfg.lookahead_steps:
            events.extend(self._decide(self._pending.popleft()))
        return events

    def finish(self) -> list[DiarizationEvent]:
        """End of stream: decide the steps still waiting for look-ahead and close the open turn."""
        events: list[DiarizationEvent] = []
        while self._pending:
            events.extend(self._decide(self._pending.popleft()))
        if self._active is not None:
            events.extend(self._close(self._last_speech_end))
        return events

    @property
    def embedding_labels(self) -> dict[int, int]:
        """Live speaker of each step embedding (by step index)."""
        return dict(self._embedding_labels)

    @property
    def num_speakers(self) -> int:
        return self._known_speakers

    def centroids(self) -> np.ndarray:
        """(speakers, dim): row k is speaker k's current centroid (what named speakers are matched on)."""
        return self.clustering.centroids()[: self._known_speakers]

    # --- internals ---

    def _hysteresis(self, step: StepAnalysis) -> np.ndarray:
        cfg = self.config
        speech = np.zeros(len(step.speech_probs), bool)
        valid_frames = -(-step.valid_samples // cfg.frame_samples)
        for i, p in enumerate(step.speech_probs):
            if i >= valid_frames:
                self._in_speech = False
            elif self._in_speech:
                self._in_speech = p >= cfg.vad_offset
            else:
                self._in_speech = p >= cfg.vad_onset
            speech[i] = self._in_speech
            self._speech_history.append(bool(self._in_speech))
        return speech

    def _label_for(self, record: StepRecord) -> int | None:
        """The newest embedding label within the look-ahead (its window is best centred on the step)."""
        for index in range(record.step_index + self.config.lookahead_steps, record.step_index - 1, -1):
            if index in self._embedding_labels:
                return self._embedding_labels[index]
        return None

    def _decide(self, record: StepRecord) -> list[DiarizationEvent]:
        cfg = self.config
        label = self._label_for(record)
        if label is None:
            label = self._active  # speech without a trusted embedding continues the current turn
        labels = np.full(len(record.speech), -1, np.int64)
        events: list[DiarizationEvent] = []
        for i, is_speech in enumerate(record.speech):
            frame_start = record.start_sample + i * cfg.frame_samples
            frame_end = frame_start + cfg.frame_samples
            if is_speech and label is not None:
                labels[i] = label
                if self._active is None:
                    events.extend(self._open(label, frame_start))
                elif self._active != label:
                    events.extend(self._close(frame_start))
                    events.extend(self._open(label, frame_start))
                self._silence_frames = 0
                self._last_speech_end = min(frame_end, record.start_sample + record.valid_samples)
            elif self._active is not None:
                self._silence_frames += 1
                if self._silence_frames > cfg.live_hangover_frames:
                    events.extend(self._close(self._last_speech_end))
        events.append(FrameLabels(record.step_index, record.start_sample, record.valid_samples, labels))
        return events

    def _open(self, speaker: int, sample: int) -> list[DiarizationEvent]:
        self._active, self._run_start, self._silence_frames = speaker, sample, 0
        return [SpeakerStarted(speaker, sample)]

    def _close(self, end_sample: int) -> list[DiarizationEvent]:
        assert self._active is not None
        speaker, start = self._active, self._run_start
        self._active = None
        events: list[DiarizationEvent] = [SpeakerStopped(speaker, end_sample)]
        if end_sample > start:
            events.append(SegmentClosed(speaker, start, end_sample))
        return events
