import pytest

from rtsep.errors import TooFast
from rtsep.stream.limits import RateLimit, RealtimeGuard


def test_audio_may_lead_the_clock_by_the_burst_then_by_the_ratio():
    guard = RealtimeGuard(RateLimit(max_ratio=2.0, burst_s=3.0), start_s=100.0)
    guard.check(3.0, now_s=100.0)  # the whole burst at once
    with pytest.raises(TooFast) as info:
        guard.check(3.1, now_s=100.0)
    assert info.value.error_code == "too_fast" and "2x real time beyond a 3 s burst" in str(info.value)
    guard.check(3.0 + 2.0 * 10.0, now_s=110.0)  # 10 s later: 20 s more allowed
    with pytest.raises(TooFast):
        guard.check(23.1, now_s=110.0)


def test_a_clock_reading_before_the_start_allows_only_the_burst():
    guard = RealtimeGuard(RateLimit(max_ratio=4.0, burst_s=1.0), start_s=50.0)
    guard.check(1.0, now_s=40.0)
    with pytest.raises(TooFast):
        guard.check(1.5, now_s=40.0)
