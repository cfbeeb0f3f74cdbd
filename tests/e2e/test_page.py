"""The page as a user meets it: open it in headless Chromium with a two-talker meeting as the microphone,
over WebRTC and over WebSocket; speaker players appear and play, labels and the timeline follow, the
timeline downloads, and Stop ends the session cleanly."""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_server

pytestmark = pytest.mark.slow

PLAYING_SPEAKERS = """() => [...document.querySelectorAll('.speaker-track')].filter(el => {
    const audio = el.querySelector('audio');
    return audio && audio.srcObject && !audio.paused && audio.currentTime > 1
        && Number(el.dataset.levelMax || 0) > 0.3;
}).length"""


SNAPSHOT = """() => ({
    status: document.getElementById('status').textContent,
    speakers: [...document.querySelectorAll('.speaker-track')].map(el => {
        const audio = el.querySelector('audio');
        return {speaker: el.dataset.speaker, level_max: el.dataset.levelMax, has_stream: !!audio.srcObject,
                paused: audio.paused, time: audio.currentTime};
    }),
    log: [...document.querySelectorAll('#log li')].slice(0, 8).map(li => li.textContent),
})"""


FINAL_PLAYERS_READY = """() => {
    const audios = [...document.querySelectorAll('#final-tracks .final-track audio')];
    return !document.getElementById('final-panel').hidden && audios.length > 0
        && audios.every(a => a.src.startsWith('blob:') && a.duration > 1);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_meeting_from_the_microphone_gives_live_speaker_tracks(server, browser, transport):
    page = await browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.base_url}/?autostart=1&transport={transport}")

    await page.wait_for_function("document.getElementById('session-id').textContent.length > 0", timeout=20_000)
    session_id = await page.text_content("#session-id")
    assert re.fullmatch(r"[0-9a-f]{32}", session_id)
    assert await page.get_attribute("#status", "data-state") == "live"

    # two speakers or more, each with its own player that is playing sound
    try:
        await page.wait_for_function(f"({PLAYING_SPEAKERS})() >= 2", timeout=60_000)
    except Exception as exc:  # playwright's TimeoutError
        if "Timeout" not in type(exc).__name__:
            raise
        pytest.fail(f"fewer than 2 playing speakers after 60 s: {await page.evaluate(SNAPSHOT)}")
    players = await page.eval_on_selector_all(
        ".speaker-track", "els => els.map(el => [el.dataset.speaker, el.querySelector('.name').textContent])")
    assert len(players) >= 2
    for speaker, label in players:
        assert re.fullmatch(r"SPEAKER_\d\d", speaker) and label == speaker

    # the live timeline has grown, and its RTTM downloads with the session's token
    assert int(await page.get_attribute("#timeline", "data-segments")) > 0
    async with page.expect_download() as download_info:
        await page.click("#timeline-rttm")
    download = await download_info.value
    assert download.suggested_filename == f"{session_id}.rttm"
    rttm = (await download.path()).read_text()
    assert rttm.startswith(f"SPEAKER {session_id} 1 ") and "SPEAKER_0" in rttm

    # Stop: the server flushes, sends 'done', and the session is complete on the server
    await page.click("#stop")
    await page.wait_for_function("document.getElementById('status').dataset.state === 'done'", timeout=30_000)
    info = server.services.store.get(session_id)
    assert info.state == "done" and info.outcome == "completed"
    assert info.transport == ("webrtc" if transport == "webrtc" else "websocket")
    assert len(info.speakers) >= 2
    assert await page.get_attribute("#timeline", "data-kind") == "final"

    # the session has ended: one player per final speaker, its WAV fetched with the token and loaded
    await page.wait_for_function(FINAL_PLAYERS_READY, timeout=30_000)
    final = server.services.store.final_timeline(session_id)
    shown = await page.eval_on_selector_all("#final-tracks .final-track", "els => els.map(el => el.dataset.speaker)")
    assert shown and sorted(shown) == sorted(final["tracks"]) == sorted(final["speakers"])
    assert not errors, errors
    await page.close()
