"""Separators: the streaming interface and registry, the own causal Conv-TasNet and TF-mask, the SepFormer adapter."""

from rtsep.separate.base import (
    StreamingSeparator,
    available_separators,
    create_separator,
    register_separator,
)

__all__ = ["StreamingSeparator", "available_separators", "create_separator", "register_separator"]
