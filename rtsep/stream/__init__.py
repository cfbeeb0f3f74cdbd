"""The streaming engine: per-session state machines (numpy + soxr only, no I/O, no asyncio, no torch)."""
