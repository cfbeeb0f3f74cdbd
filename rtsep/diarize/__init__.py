"""Diarization: voice activity, speaker embeddings, online clustering, turns, timelines."""
