"""rtsep: real-time speech separation and diarization server."""

__version__ = "0.1.0"
