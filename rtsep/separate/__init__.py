"""Separators: the streaming interface and registry, rtsep's own causal Conv-TasNet, the SepFormer adapter."""

from rtsep.separate.base import (
    StreamingSeparator,
    available_separators,
    create_separator,
    register_separator,
)

__all__ = ["StreamingSeparator", "available_separators", "create_separator", "register_separator"]
