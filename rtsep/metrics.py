"""Prometheus metrics (names prefixed ``rtsep_``, base units), one registry per server instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge("rtsep_active_sessions", "Sessions currently streaming", registry=r)
        self.sessions = Counter(
            "rtsep_sessions", "Sessions ended, by outcome", ["outcome", "transport"], registry=r
        )
        self.audio_in_seconds = Counter("rtsep_audio_in_seconds", "Audio received from clients", registry=r)
        self.audio_out_seconds = Counter(
            "rtsep_audio_out_seconds", "Per-speaker audio sent to clients", registry=r
        )
        self.processing_latency_seconds = Histogram(
            "rtsep_processing_latency_seconds",
            "From a step's last sample arriving to its labels and audio being sent",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "rtsep_batch_seconds", "Wall time of one batched inference tick",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0), registry=r,
        )
        self.batch_size = Histogram(
            "rtsep_batch_size", "Steps per batched inference tick", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.real_time_factor = Gauge(
            "rtsep_real_time_factor", "Inference seconds per second of audio (recent batches)", registry=r
        )
        self.queue_depth = Gauge("rtsep_queue_depth", "Steps waiting for inference", registry=r)
        self.dropped_frames = Counter(
            "rtsep_dropped_frames", "Steps dropped under overload (each a marked gap), by path: diarization and "
            "separation (the 'drop' overflow policy), input (shed by a transport that fell behind)", ["path"],
            registry=r,
        )
        for path in ("diarization", "separation", "input"):
            self.dropped_frames.labels(path)
        self.errors = Counter("rtsep_errors", "Errors by code", ["code"], registry=r)
        self.deleted_sessions = Counter(
            "rtsep_deleted_sessions", "Sessions deleted (retention or DELETE)", registry=r
        )
        self.separator_adaptations = Counter(
            "rtsep_separator_adaptations", "Separators fine-tuned on a live session's own talkers", registry=r
        )

        self.last_real_time_factor = 0.0

    def observe_batch(self, batch_size: int, seconds: float, step_s: float) -> None:
        """One inference tick of ``batch_size`` steps of ``step_s`` audio each took ``seconds``."""
        self.batch_size.observe(batch_size)
        self.batch_seconds.observe(seconds)
        rtf = seconds / (batch_size * step_s)
        # exponentially weighted, so the gauge follows the recent load
        self.last_real_time_factor = 0.9 * self.last_real_time_factor + 0.1 * rtf if self.last_real_time_factor else rtf
        self.real_time_factor.set(self.last_real_time_factor)

    def render(self) -> bytes:
        return generate_latest(self.registry)
