"""``--denoise`` end to end with the real DeepFilterNet3 runtime: a live WebSocket session through a real server
(the denoised tracks too), and ``rtsep process --denoise`` from the real command line."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from rtsep_client import stream_file

from tests.conftest import diarization_only, run_server

pytestmark = pytest.mark.slow
SECONDS = 8


@pytest.fixture(scope="module")
def noisy_wav(sample_paths, tmp_path_factory):
    """8 s of the real two-talker sample (evaluation data, a test input here) at 48 kHz with white noise (10 dB
    SNR); returns its path and the noise's power at the session's 16 kHz."""
    import soxr

    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    speech = soxr.resample(audio[6 * rate: (6 + SECONDS) * rate], rate, 48000).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(speech.size).astype(np.float32)
    noisy = speech + noise * np.sqrt((speech ** 2).mean() / 10.0)
    path = tmp_path_factory.mktemp("audio") / "noisy.wav"
    sf.write(str(path), noisy, 48000)
    noise_16k = soxr.resample(noise * np.sqrt((speech ** 2).mean() / 10.0), 48000, 16000)
    return path, float((noise_16k ** 2).mean())


def quiet_power(tracks) -> float:
    """The power of the quietest tenth of the 10 ms frames where a track carries audio (a speaker's track is
    silent where another speaker talks): between words, that is the background."""
    powers = []
    for track in tracks:
        audio = sf.read(str(track), dtype="float32")[0]
        frames = (audio[: audio.size // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1)
        powers.append(frames[frames > 0])
    frames = np.sort(np.concatenate(powers))
    return float(frames[: max(1, frames.size // 10)].mean())


async def test_a_live_session_with_denoise_gives_a_timeline_and_denoised_tracks(noisy_wav, tmp_path):
    noisy_wav, noise_power = noisy_wav
    base = diarization_only()
    pipeline = replace(base, denoise=replace(base.denoise, enabled=True, tracks=True))
    with run_server(tmp_path / "data", pipeline=pipeline) as server:
        result = await stream_file(noisy_wav, server.ws_url, tmp_path / "out", speed=0)
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert timeline["kind"] == "final" and timeline["segments"] and result.speakers
    tracks = sorted((tmp_path / "out" / "tracks").glob("*.wav"))
    assert tracks
    mix = sum(sf.read(str(t), dtype="float32")[0] for t in tracks)
    assert abs(mix.size / 16000 - SECONDS) < 0.05  # every input position is there, none moved
    assert quiet_power(tracks) < noise_power / 10  # the tracks carry the denoised input


def test_process_with_denoise_writes_its_outputs(noisy_wav, tmp_path):
    noisy_wav, noise_power = noisy_wav
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "rtsep", "process", str(noisy_wav), "--out", str(out), "--quiet",
                          "--denoise", "--separator", "none"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["speakers"]
    assert (out / "timeline.rttm").read_text().startswith("SPEAKER ")
    tracks = sorted((out / "tracks").glob("*.wav"))
    assert tracks  # (the final timeline may name a speaker more than the live labels gave a track)
    mix = sum(sf.read(str(t), dtype="float32")[0] for t in tracks)
    assert abs(mix.size / 16000 - SECONDS) < 0.05
    assert quiet_power(tracks) > noise_power / 2  # without --denoise-tracks the tracks keep the recording
