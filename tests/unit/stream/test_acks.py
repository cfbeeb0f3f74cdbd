"""Acknowledgements (rtsep.stream.acks): nothing is released before its write commits; marks are coalesced."""

import pytest

from rtsep.stream.acks import Acknowledgements, TrackMark


def test_a_held_item_waits_for_its_own_commit_and_items_keep_their_order():
    acks = Acknowledgements(mark_interval_samples=16000)
    first, second, third = acks.issue(), acks.issue(), acks.issue()
    acks.hold(second, "segment A")
    acks.hold(third, "segment B")
    assert acks.committed(first) == []  # an earlier write's commit releases nothing held later
    assert acks.committed(second) == ["segment A"]
    assert acks.pending_writes == 1
    assert acks.committed(third) == ["segment B"]
    assert acks.pending_writes == 0


def test_track_marks_follow_commits_and_are_coalesced():
    acks = Acknowledgements(mark_interval_samples=1000)
    writes = [acks.issue() for _ in range(6)]
    for i, write in enumerate(writes[:5]):
        acks.track_written(write, "source_0", 256, (i + 1) * 400)
    acks.hold(writes[5], "final timeline")
    assert acks.committed(writes[0]) == []  # 400 samples committed: no mark yet
    assert acks.committed(writes[1]) == []  # 800 < 1000 behind
    assert acks.committed(writes[2]) == [TrackMark("source_0", 256, 1200)]  # lags by >= 1000: a mark
    assert acks.committed(writes[3]) == []
    assert acks.committed(writes[4]) == []  # 800 behind the last mark
    # a released item comes after every track's mark brought up to date (the final timeline: the last marks)
    assert acks.committed(writes[5]) == [TrackMark("source_0", 256, 2000), "final timeline"]


def test_a_mark_never_claims_audio_whose_write_has_not_committed():
    acks = Acknowledgements(mark_interval_samples=1)
    a, b = acks.issue(), acks.issue()
    acks.track_written(a, "SPEAKER_00", 0, 500)
    acks.track_written(b, "SPEAKER_01", 1, 700)
    assert acks.committed(a) == [TrackMark("SPEAKER_00", 0, 500)]
    assert acks.committed(b) == [TrackMark("SPEAKER_01", 1, 700)]


def test_a_released_item_comes_after_the_marks_committed_before_it():
    acks = Acknowledgements(mark_interval_samples=10**9)
    audio, segment, more = acks.issue(), acks.issue(), acks.issue()
    acks.track_written(audio, "SPEAKER_00", 0, 4096)
    acks.hold(segment, "segment")
    assert acks.committed(audio) == []
    assert acks.committed(segment) == [TrackMark("SPEAKER_00", 0, 4096), "segment"]
    assert acks.committed(more) == []  # nothing new to mark


def test_after_a_failed_write_nothing_more_is_acknowledged():
    acks = Acknowledgements(mark_interval_samples=1)
    audio, lost, later = acks.issue(), acks.issue(), acks.issue()
    acks.track_written(audio, "source_0", 256, 100)
    acks.track_written(lost, "source_0", 256, 200)
    acks.hold(later, "segment")
    assert acks.committed(audio) == [TrackMark("source_0", 256, 100)]
    acks.write_failed(lost)
    assert acks.committed(later) == [] and acks.failed and acks.pending_writes == 0


def test_misuse_is_refused():
    acks = Acknowledgements(mark_interval_samples=1)
    with pytest.raises(ValueError, match="never issued"):
        acks.committed(0)
    write = acks.issue()
    acks.committed(write)
    with pytest.raises(ValueError, match="twice or out of order"):
        acks.committed(write)
    with pytest.raises(ValueError, match="mark_interval_samples"):
        Acknowledgements(mark_interval_samples=0)
