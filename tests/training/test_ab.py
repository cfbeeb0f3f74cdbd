from training.ab import decide


def _points(start_cpu_h, averages, raws, step0=100):
    return [{"step": step0 + 10 * i, "cpu_h": start_cpu_h + 0.1 * (i + 1), "ema_valid_si_sdri_db": a,
             "valid_si_sdri_db": r} for i, (a, r) in enumerate(zip(averages, raws, strict=True))]


def test_an_arm_is_adopted_only_by_margin_and_with_raw_weights_not_worse():
    base = _points(1.0, [2.0] * 6, [2.0] * 6)
    better = _points(1.0, [2.0, 2.0, 2.0, 2.2, 2.2, 2.2], [2.1] * 6)
    better_avg_worse_raw = _points(1.0, [2.5] * 6, [1.9] * 6)
    within_margin = _points(1.0, [2.05] * 6, [2.3] * 6)
    out = decide({"A": base, "B": better, "C": better_avg_worse_raw, "D": within_margin}, fork_cpu_h=1.0)
    assert out["decided"] and out["adopted"] == ["B"] and out["continue"] == "B"
    assert out["runs"]["B"]["average_db"] == 2.2 and out["runs"]["B"]["steps"] == [130, 140, 150]


def test_runs_are_compared_at_the_cpu_all_reached_and_not_before_the_minimum():
    base = _points(1.0, [2.0] * 10, [2.0] * 10)  # reaches 2.0 CPU-h
    short = _points(1.0, [3.0] * 6, [3.0] * 6)  # reaches 1.6 CPU-h
    out = decide({"A": base, "B": short}, fork_cpu_h=1.0)
    assert out["common_cpu_h"] == 1.6 and out["runs"]["A"]["cpu_h"] == [1.4, 1.5, 1.6] and out["continue"] == "B"
    early = decide({"A": base[:4], "B": short[:4]}, fork_cpu_h=1.0)
    assert not early["decided"] and "since the fork" in early["why"]
    assert not decide({"A": base, "B": short[:2]}, fork_cpu_h=1.0)["decided"]


def test_a_validation_seconds_past_the_common_point_still_counts():
    base = _points(1.0, [2.0] * 6, [2.0] * 6)
    late = [dict(p, cpu_h=p["cpu_h"] + 0.0003) for p in _points(1.0, [2.0] * 5 + [3.0], [2.0] * 5 + [3.0])]
    out = decide({"A": base, "B": late}, fork_cpu_h=1.0)
    assert out["runs"]["B"]["steps"][-1] == 150 and out["runs"]["B"]["average_db"] == round(7 / 3, 3)
