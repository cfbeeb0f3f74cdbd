"""rtsep benchmarks: run as modules from the repository root, e.g. ``python -m bench.diarization_quality``."""
