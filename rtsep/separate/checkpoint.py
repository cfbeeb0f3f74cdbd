"""rtsep's own separator checkpoints: safetensors weights with a JSON header (format, version, the model's config
and free-form metadata), written atomically. One reader and one writer for every architecture."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from rtsep.errors import ModelLoadError

M = TypeVar("M", bound=nn.Module)


def save_checkpoint(model: nn.Module, path: str | Path, *, format_name: str, version: int,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights and its ``config`` dataclass to ``path`` (via a temporary file, then renamed)."""
    from safetensors.torch import save_file

    header = {"format": format_name, "version": str(version), "config": json.dumps(asdict(model.config)),
              "metadata": json.dumps(metadata or {})}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    tmp.replace(path)


def read_header(path: str | Path, *, format_name: str, version: int, what: str) -> dict[str, Any]:
    """The header of a checkpoint of ``format_name``: ``version``, ``config`` and ``metadata``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if header.get("format") != format_name:
        raise ModelLoadError(f"{path} is not an rtsep {what} checkpoint")
    return {"version": header.get("version", str(version)), "config": json.loads(header["config"]),
            "metadata": json.loads(header.get("metadata", "{}"))}


def load_checkpoint(path: str | Path, build: Callable[[dict[str, Any]], M], *, format_name: str, version: int,
                    what: str) -> M:
    """A model built by ``build(config dict)`` with the checkpoint's weights, on the CPU, in eval mode; every
    failure is a :class:`ModelLoadError` naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{what} checkpoint not found: {path}")
    try:
        header = read_header(path, format_name=format_name, version=version, what=what)
        found = int(header["version"])
        if found > version:
            raise ModelLoadError(f"{path}: checkpoint version {found} is newer than this rtsep")
        model = build(header["config"])
        model.load_state_dict(load_file(str(path)))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load {what} checkpoint {path}: {exc}") from exc
    return model.eval()
