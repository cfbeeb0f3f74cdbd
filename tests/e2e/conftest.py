"""Headless Chromium (Debian's /usr/bin/chromium, driven by playwright) with a meeting as its microphone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

CHROMIUM = os.environ.get("RTSEP_CHROMIUM", "/usr/bin/chromium")


def chromium_args(fake_mic: Path) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic}",
        "--autoplay-policy=no-user-gesture-required",  # a kiosk: sound plays without a click
    ]


def _require_browser() -> None:
    missing = []
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both: missing means the set-up is broken
        pytest.skip(message)


@pytest.fixture(scope="session")
def fake_mic(meeting_wav, tmp_path_factory) -> Path:
    """The meeting from just before its first words (6 s in): 14 s of two talkers, looped by Chromium."""
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    path = tmp_path_factory.mktemp("mic") / "meeting-from-6s.wav"
    sf.write(str(path), audio[6 * rate:], rate, subtype="PCM_16")
    return path


@pytest.fixture
async def browser(fake_mic):
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(fake_mic))
        try:
            yield instance
        finally:
            await instance.close()
