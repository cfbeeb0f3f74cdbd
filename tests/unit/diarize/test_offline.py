"""Final speakers take the live speakers' names by time (rtsep.diarize.offline.name_by_live)."""

from rtsep.diarize.offline import name_by_live, shared_samples

RATE = 16000


def s(start_s: float, end_s: float, speaker: int) -> tuple[int, int, int]:
    return (round(start_s * RATE), round(end_s * RATE), speaker)


def test_shared_samples_counts_co_occupied_time_of_every_pair():
    final = [s(0, 10, 0), s(10, 20, 1)]
    live = [s(0, 4, 0), s(4, 12, 1), s(12, 20, 0)]
    shared = shared_samples(final, live, 2, 2) / RATE
    assert shared.tolist() == [[4.0, 6.0], [8.0, 2.0]]


def test_a_kept_speaker_keeps_its_live_name_even_when_cluster_ids_differ():
    live = [s(0, 5, 0), s(5, 10, 1), s(10, 15, 0), s(15, 20, 1)]
    final = [s(0, 5, 1), s(5, 10, 0), s(10, 15, 1), s(15, 20, 0)]  # the same turns, clusters numbered the other way
    assert name_by_live(final, live, rate_hz=RATE) == {1: 0, 0: 1}


def test_a_merge_of_two_live_speakers_keeps_the_name_it_shares_most_with():
    live = [s(0, 6, 0), s(6, 8, 2), s(8, 14, 1), s(14, 20, 2)]  # 2 is the same talker as 0, split live
    final = [s(0, 8, 0), s(8, 14, 1), s(14, 20, 0)]
    assert name_by_live(final, live, rate_hz=RATE) == {0: 2, 1: 1}  # 2 shares 8 s with cluster 0, 0 only 6 s


def test_a_split_keeps_the_name_on_the_larger_part_and_the_rest_gets_a_name_no_live_speaker_had():
    live = [s(0, 20, 0), s(20, 30, 1)]  # live heard one talker where there were two
    final = [s(0, 12, 0), s(12, 20, 2), s(20, 30, 1)]
    names = name_by_live(final, live, rate_hz=RATE)
    assert names[0] == 0 and names[1] == 1
    assert names[2] == 2  # fresh: above every live speaker


def test_a_final_speaker_that_no_live_one_covers_gets_a_fresh_name():
    live = [s(0, 10, 0), s(10, 20, 1)]
    final = [s(0, 10, 0), s(10, 20, 1), s(20, 30, 2)]  # e.g. speech the live path missed
    names = name_by_live(final, live, live_names=[0, 1, 3], rate_hz=RATE)  # 3: announced live, never closed
    assert names[0] == 0 and names[1] == 1
    assert names[2] == 4  # never a name a live speaker used, closed turn or not


def test_too_little_shared_time_is_no_match():
    live = [s(0, 10, 0), s(10, 10.5, 1)]
    # final speaker 1 talks 10 s and shares only 0.5 s with live speaker 1: it is a new speaker
    final = [s(0, 10, 0), s(10, 20, 1)]
    names = name_by_live(final, live, rate_hz=RATE)
    assert names == {0: 0, 1: 2}
    # the thresholds are the function's: with none, the same pair is kept
    assert name_by_live(final, live, rate_hz=RATE, min_shared_s=0, min_shared_fraction=0) == {0: 0, 1: 1}


def test_fresh_names_follow_first_appearance_and_no_live_timeline_names_from_zero():
    final = [s(5, 6, 1), s(0, 2, 0), s(3, 4, 2)]
    assert name_by_live(final, [], rate_hz=RATE) == {0: 0, 2: 1, 1: 2}
    assert name_by_live([], [s(0, 1, 0)], rate_hz=RATE) == {}
