import numpy as np
import pytest
import torch

from rtsep.diarize.vad import VadState, default_weights_path, load_silero_vad


@pytest.fixture(scope="module")
def vad():
    return load_silero_vad()


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    return (tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_batched_step_matches_per_frame(vad):
    x = torch.from_numpy(np.stack([_signal(1.1, 0), _signal(1.1, 1)]))[:, : 4 * 4096]
    with torch.inference_mode():
        c, s = torch.zeros(2, 64), torch.zeros(2, 2, 128)
        batched = []
        for i in range(0, x.shape[1], 4096):
            p, c, s = vad(x[:, i : i + 4096], c, s)
            batched.append(p)
        batched = torch.cat(batched, 1)
        padded = torch.cat([torch.zeros(2, 64), x], 1)
        s = torch.zeros(2, 2, 128)
        single = []
        for i in range(0, x.shape[1], 512):
            p, s = vad.forward_frame(padded[:, i : i + 576], s)
            single.append(p)
        single = torch.stack(single, 1)
    assert torch.allclose(batched, single, atol=1e-6)


def test_matches_package_jit(vad):
    x = torch.from_numpy(_signal(1.1))[: 4 * 4096]
    jit = torch.jit.load(str(default_weights_path()), map_location="cpu")
    jit.reset_states()
    with torch.inference_mode():
        ref = torch.stack([jit(x[i : i + 512][None], 16000)[0, 0] for i in range(0, x.numel(), 512)])
        c, s, ours = torch.zeros(1, 64), torch.zeros(2, 1, 128), []
        for i in range(0, x.numel(), 4096):
            p, c, s = vad(x[None, i : i + 4096], c, s)
            ours.append(p[0])
    assert torch.allclose(torch.cat(ours), ref, atol=1e-5)


def test_speech_buffer_keeps_newest():
    state = VadState.initial()
    state.add_speech(np.arange(5, dtype=np.float32), capacity=8)
    state.add_speech(np.arange(5, 10, dtype=np.float32), capacity=8)
    assert state.speech.tolist() == list(range(2, 10))
    state.clear_speech()
    assert state.speech.size == 0
