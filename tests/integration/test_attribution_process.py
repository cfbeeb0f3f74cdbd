"""Attribution through `rtsep process`: a two-talker meeting built from real speech (the pyannote sample's solo
turns, evaluation data: used to test, never to train) with overlaps and a pause, separated by an oracle that
returns the true talkers as its two sources (in swapped order after the pause). With the attribution the final
speaker tracks carry the right talker inside the overlaps, clearly better than the mixture; without it (the
gated input) they carry the mixture."""

import asyncio
import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from rtsep.compose import process_file
from rtsep.config import load_config
from rtsep.evaluate import si_sdr_db
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.runtime.separation import SeparationRuntime
from rtsep.separate.base import StreamingSeparator
from rtsep.specs import ModelSpec

pytestmark = pytest.mark.slow

RATE = 16000
SEP_RATE = 8000
SWAP_S = 12.0  # the oracle's sources swap here, in the pause


class OracleSeparator(StreamingSeparator):
    """Returns the true sources (K, T) at 8 kHz for each step, in swapped order from ``swap_s`` on."""

    def __init__(self, sources: np.ndarray, swap_s: float) -> None:
        self.spec = ModelSpec("oracle", SEP_RATE, 1024, 0, sources.shape[0])
        self.sources = sources
        self.swap_sample = round(swap_s * SEP_RATE)

    def new_state(self):
        return {"position": 0}

    def process(self, chunks, states):
        self.validate_batch(chunks, states)
        step = self.spec.step_samples
        out = np.zeros((len(states), self.sources.shape[0], step), np.float32)
        for i, state in enumerate(states):
            lo = state["position"]
            piece = self.sources[:, lo:lo + step]
            out[i, :, : piece.shape[1]] = piece if lo < self.swap_sample else piece[::-1]
            state["position"] += step
        return torch.from_numpy(out)

    def to(self, device):
        return self


def material(audio, spans_s):
    return np.concatenate([audio[round(a * RATE):round(b * RATE)] for a, b in spans_s])


def place(track, clip, at_s, seconds, cursor):
    """``seconds`` of ``clip`` (looping, from ``cursor``) into ``track`` at ``at_s``; returns the new cursor."""
    n = round(seconds * RATE)
    idx = (cursor + np.arange(n)) % clip.size
    start = round(at_s * RATE)
    track[start:start + n] += clip[idx]
    return cursor + n


@pytest.fixture(scope="module")
def meeting(sample_paths, tmp_path_factory):
    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    assert rate == RATE
    a = material(audio, [(11.1, 14.4), (18.6, 21.4)])  # speaker90 alone
    b = material(audio, [(14.75, 17.9), (22.0, 27.8)])  # speaker91 alone
    total = round(23.0 * RATE)
    ta, tb = np.zeros(total, np.float32), np.zeros(total, np.float32)
    ca = cb = 0
    ca = place(ta, a, 0.0, 4.0, ca)
    cb = place(tb, b, 4.3, 4.0, cb)
    ca = place(ta, a, 8.3, 3.0, ca)  # overlap 8.3-11.3
    cb = place(tb, b, 8.3, 3.0, cb)
    cb = place(tb, b, 12.8, 3.0, cb)  # after the pause, B first
    ca = place(ta, a, 15.8, 3.0, ca)
    ca = place(ta, a, 18.8, 3.0, ca)  # overlap 18.8-21.8
    cb = place(tb, b, 18.8, 3.0, cb)
    folder = tmp_path_factory.mktemp("attribution")
    path = folder / "meeting.wav"
    sf.write(str(path), ta + tb, RATE)
    overlap = np.zeros(total, bool)
    for lo, hi in ((8.3, 11.3), (18.8, 21.8)):
        overlap[round(lo * RATE):round(hi * RATE)] = True
    return path, {"A": ta, "B": tb}, overlap


def run(meeting_path, out, talkers, attribution: bool):
    config = load_config(env={}).pipeline
    config = dataclasses.replace(config, attribution=dataclasses.replace(config.attribution, enabled=attribution))
    sources = np.stack([soxr.resample(talkers[k], RATE, SEP_RATE).astype(np.float32) for k in ("A", "B")])
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    separation = SeparationRuntime(config.runtime, OracleSeparator(sources, SWAP_S))

    async def go():
        return await process_file(meeting_path, out, config, runtime, separation=separation)

    try:
        return asyncio.run(go())
    finally:
        runtime.close()
        separation.close()


def overlap_gain_db(folder, talkers, overlap):
    """For each track in ``folder``: inside the overlaps where it is on, SI-SDR of the track minus the mixture's,
    against the talker it carries best there."""
    mix = talkers["A"] + talkers["B"]
    gains = {}
    for path in sorted(folder.glob("*.wav")):
        track, _ = sf.read(str(path), dtype="float32")
        track = np.pad(track, (0, max(0, mix.size - track.size)))[: mix.size]
        region = overlap & (np.abs(track) > 0)
        if region.sum() < RATE:  # less than a second of overlap on this track
            continue
        scored = {name: (si_sdr_db(track[region], ref[region]) or -99.0)
                  - (si_sdr_db(mix[region], ref[region]) or -99.0) for name, ref in talkers.items()}
        gains[path.stem] = max(scored.values())
    return gains


def test_process_tracks_carry_the_attributed_sources_inside_overlaps(meeting, tmp_path):
    path, talkers, overlap = meeting
    result = run(path, tmp_path / "attributed", talkers, attribution=True)
    assert len(result.speakers) >= 2
    for track in (tmp_path / "attributed" / "tracks").glob("*.wav"):
        audio, rate = sf.read(str(track))
        assert rate == RATE and audio.size == round(result.duration_s * RATE)
    gains = overlap_gain_db(tmp_path / "attributed" / "tracks", talkers, overlap)
    assert gains and all(g >= 6.0 for g in gains.values()), gains  # the right talker, much better than the mix
    # live: the speaker frames as a live client got them (decided causally, by the sources' recent audio)
    live = overlap_gain_db(tmp_path / "attributed" / "tracks" / "live", talkers, overlap)
    # Known defect (issue 20): live decisions use whichever source embeddings have come back from the encoder's
    # thread; `rtsep process` pushes audio faster than real time, so one run gives +5.8 / +2.8 dB and another
    # +5.8 / -3.0 dB. Pinned here: the live path attributes a source to a talker at all; the final tracks above
    # are deterministic.
    assert live and max(live.values()) >= 3.0, live

    plain = run(path, tmp_path / "gated", talkers, attribution=False)
    assert plain.speakers == result.speakers
    gated = overlap_gain_db(tmp_path / "gated" / "tracks", talkers, overlap)
    assert gated and all(abs(g) < 1.0 for g in gated.values()), gated  # the gated input is the mixture there
    live = overlap_gain_db(tmp_path / "gated" / "tracks" / "live", talkers, overlap)
    assert live and all(abs(g) < 1.0 for g in live.values()), live


def test_process_with_the_adaptive_separator_writes_attributed_tracks_and_their_decisions(meeting, tmp_path):
    # the adaptive path's sources come after the session: tracks/ is rendered again with them
    from rtsep.transport.file import write_attributed

    path, talkers, _ = meeting
    mix = talkers["A"] + talkers["B"]
    config = load_config(env={}).pipeline
    final = {"segments": [{"speaker": "S0", "start_s": 0.0, "end_s": 4.0},
                          {"speaker": "S0", "start_s": 8.3, "end_s": 11.3},
                          {"speaker": "S1", "start_s": 4.3, "end_s": 11.3}]}
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    try:
        files = write_attributed(tmp_path, mix, np.stack([talkers["A"], talkers["B"]]), RATE, final, config,
                                 runtime.embed_windows, mix.size)
    finally:
        runtime.close()
    assert sorted(p.name for p in files) == ["S0.wav", "S1.wav", "attribution.json"]
    info = json.loads((tmp_path / "tracks" / "attribution.json").read_text())
    overlap_blocks = [b for b in info["blocks"] if len(b["speakers"]) == 2]
    assert len(overlap_blocks) == 3  # 8.3-11.3 s in blocks of at most 1 s
    assert all((b["speakers"]["S0"]["source"], b["speakers"]["S1"]["source"]) == (0, 1) for b in overlap_blocks)
    solo = [b for b in info["blocks"] if len(b["speakers"]) == 1]
    assert solo and all(next(iter(b["speakers"].values()))["reason"] == "solo" for b in solo)  # one talker: input
