"""The command line's own logging setup (no models)."""

from __future__ import annotations

import logging

from rtsep.cli import setup_logging


def test_the_cpu_only_cuda_home_note_is_filtered_and_nothing_else(caplog):
    setup_logging("INFO")
    logger = logging.getLogger("torch.utils.cpp_extension")  # where torch.compile's toolchain probe logs
    with caplog.at_level(logging.INFO):
        logger.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
