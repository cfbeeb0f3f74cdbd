"""Shared checks of the streaming separators (rtsep.separate.convtasnet, rtsep.separate.tfmask)."""

import torch


def perturb(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    """``model`` with every parameter moved by ``scale`` x noise (non-trivial norms, so that every path matters)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def stream(model, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``x`` (batch, time) through ``model.stream`` in chunks of ``sizes`` (cycled), one state per row."""
    states = [model.new_state() for _ in range(x.shape[0])]
    outs, pos, i = [], 0, 0
    with torch.no_grad():
        while pos < x.shape[1]:
            n = sizes[i % len(sizes)]
            outs.append(model.stream(x[:, pos : pos + n], states))
            pos += n
            i += 1
    return torch.cat(outs, dim=-1)


def streaming_error(model, x: torch.Tensor, sizes: list[int], lookahead_samples: int) -> float:
    """Largest difference between the streamed output (delayed by the look-ahead) and the offline pass."""
    with torch.no_grad():
        offline = model(x)
    streamed = stream(model, x, sizes)
    assert streamed.shape == offline.shape
    return (streamed[..., lookahead_samples:] - offline[..., :-lookahead_samples]).abs().max().item()
