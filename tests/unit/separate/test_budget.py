"""The separator's time budgets for `rtsep process` (rtsep.separate.budget): the step plan from measured step
times, early stopping on a plateau, the ensemble size, and how the adaptation follows them (fake clocks only)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from rtsep.errors import ConfigError
from rtsep.offline import OfflineConfig
from rtsep.separate.adapt import AdaptConfig, AdaptiveSeparator, adapt_convtasnet, cosine_lr
from rtsep.separate.budget import FileBudget, Plateau, StepBudget, budget_seconds, odd_members
from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig
from tests.signals import band_noise as talker

SMALL = ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8, hidden_channels=16,
                         blocks_per_repeat=2, repeats=1, sample_rate_hz=8000)
RATE = 8000


class ScriptedClock:
    """A clock for adapt_convtasnet: its first reading is the start, then two per step (before, after), each step
    lasting ``cost(k)`` s (k from 0); readings after the steps advance by nothing."""

    def __init__(self, cost):
        self.cost, self.t, self.calls = cost, 0.0, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls > 1 and self.calls % 2 == 1:  # the reading after step k = (calls - 3) // 2
            self.t += self.cost((self.calls - 3) // 2)
        return self.t


class TickingClock:
    """Every reading is ``tick_s`` after the previous one."""

    def __init__(self, tick_s: float):
        self.tick_s, self.t = tick_s, 0.0

    def __call__(self) -> float:
        self.t += self.tick_s
        return self.t


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ConvTasNet(SMALL).eval()


def speech():
    return {"A": talker(1, 4.0, 150, 700), "B": talker(2, 4.0, 1200, 2800)}


def test_plan_fills_the_rest_of_the_budget_at_the_measured_step_time():
    budget = StepBudget(budget_s=20.0, max_steps=1000)
    # the first step compiled (5 s) and is not a step time; the rest took 1 s: 20 - 7 = 13 more
    assert budget.plan(elapsed_s=7.0, step_seconds=[5.0, 1.0, 1.0]) == 16
    assert budget.plan(elapsed_s=7.0, step_seconds=[5.0, 1.0, 1.0, 9.0, 1.0]) == 18  # the median: one slow step
    assert StepBudget(20.0, max_steps=10).plan(7.0, [5.0, 1.0, 1.0]) == 10  # the ceiling
    assert budget.plan(elapsed_s=25.0, step_seconds=[5.0, 10.0, 10.0]) == 3  # over already: no more
    assert budget.plan(elapsed_s=2.0, step_seconds=[2.0]) == 10  # one step alone is its own estimate
    with pytest.raises(ValueError):
        budget.plan(0.0, [])


def test_plan_is_zero_when_fewer_than_min_steps_fit():
    assert StepBudget(5.0, max_steps=1000, min_steps=10).plan(3.0, [1.0, 1.0, 1.0]) == 0  # 3 + 2 < 10
    assert StepBudget(5.0, max_steps=1000, min_steps=5).plan(3.0, [1.0, 1.0, 1.0]) == 5
    assert StepBudget(50.0, max_steps=3, min_steps=10).plan(3.0, [1.0, 1.0, 1.0]) == 3  # the ceiling is smaller


def test_budget_seconds_is_proportional_and_capped():
    assert budget_seconds(30.0, 0.5, 60.0) == 15.0
    assert budget_seconds(600.0, 0.5, 60.0) == 60.0
    assert budget_seconds(600.0, 0.5, 0.0) == 300.0  # no cap
    with pytest.raises(ValueError):
        budget_seconds(-1.0, 0.5, 60.0)


def test_budget_settings_are_validated():
    for bad in ({"budget_s": -1.0}, {"budget_s": math.nan}, {"max_steps": -1}, {"min_steps": -1},
                {"calibration_steps": 1}):
        with pytest.raises(ConfigError):
            StepBudget(**({"budget_s": 1.0, "max_steps": 10} | bad))
    with pytest.raises(ConfigError):
        FileBudget(adapt_rtf=math.nan)
    with pytest.raises(ConfigError):
        Plateau(patience_steps=-1)
    for bad in ({"adapt_budget_rtf": -0.1}, {"adapt_budget_rtf": math.nan}, {"adapt_budget_max_s": -1.0},
                {"ensemble_budget_rtf": -1.0}, {"adapt_min_steps": -1}, {"adapt_patience_steps": -1}):
        with pytest.raises(ConfigError, match=r"\[offline\]"):
            OfflineConfig(**bad)
    with pytest.raises(ConfigError):
        AdaptConfig(patience_steps=-1)


def test_file_budget_follows_the_duration():
    budget = OfflineConfig(adapt_budget_rtf=0.5, adapt_budget_max_s=60.0, ensemble_budget_rtf=0.1).budget()
    assert budget.steps(30.0, 1000).budget_s == 15.0 and budget.steps(30.0, 1000).max_steps == 1000
    assert budget.steps(3600.0, 1000).budget_s == 60.0
    assert budget.ensemble_s(30.0) == pytest.approx(3.0)
    fixed = OfflineConfig(adapt_budget_rtf=0.0, ensemble_budget_rtf=0.0).budget()
    assert fixed.steps(30.0, 1000) is None and fixed.ensemble_s(30.0) is None


def test_plateau_stops_a_flat_curve_and_not_a_rising_one():
    rising = Plateau(patience_steps=10, min_delta_db=0.05, smoothing_steps=5)
    assert not any(rising.update(0.1 * k) for k in range(200))
    flat = Plateau(patience_steps=10, min_delta_db=0.05, smoothing_steps=5)
    stops = [k for k in range(200) if flat.update(3.0 + (0.5 if k % 2 else -0.5))]  # noisy, no trend
    assert stops and 10 <= stops[0] < 40
    never = Plateau(patience_steps=0)
    assert not any(never.update(1.0) for _ in range(500))


def test_odd_members_fit_the_budget():
    assert odd_members(10, budget_s=3.0, reference_pass_s=0.6) == 5
    assert odd_members(10, budget_s=3.0, reference_pass_s=0.7) == 3  # 4 fit: odd, so 3
    assert odd_members(10, budget_s=100.0, reference_pass_s=0.5) == 9  # at most 10, odd
    assert odd_members(10, budget_s=0.5, reference_pass_s=1.0) == 1  # the reference pass stays
    assert odd_members(1, budget_s=100.0, reference_pass_s=0.1) == 1


def test_cosine_lr_decays_from_the_peak_to_one_percent():
    assert cosine_lr(1e-3, 0, 100) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 50, 100) == pytest.approx(0.505e-3)
    assert cosine_lr(1e-3, 100, 100) == pytest.approx(1e-5)


def test_adaptation_plans_its_steps_from_the_budget(model):
    config = AdaptConfig(compile=False, steps=1000, batch_size=2, segment_s=0.25)
    plans = []
    clock = ScriptedClock(lambda k: 5.0 if k == 0 else 1.0)  # a slow first step, then 1 s each
    _, report = adapt_convtasnet(model, speech(), config, budget=StepBudget(20.0, max_steps=1000), clock=clock,
                                 on_plan=plans.append)
    assert plans == [16] and report.planned_steps == 16 and report.steps == 16 and report.skipped is None
    assert report.budget_s == 20.0 and report.stopped_early is None and len(report.losses_db) == 16
    _, capped = adapt_convtasnet(model, speech(), replace(config, steps=5), budget=StepBudget(20.0, max_steps=5),
                                 clock=ScriptedClock(lambda k: 1.0))
    assert capped.steps == 5


def test_adaptation_skips_when_the_budget_affords_too_few_steps(model):
    config = AdaptConfig(compile=False, steps=1000, batch_size=2, segment_s=0.25)
    plans = []
    adapted, report = adapt_convtasnet(model, speech(), config, budget=StepBudget(4.0, 1000, min_steps=10),
                                       clock=ScriptedClock(lambda k: 1.0), on_plan=plans.append)
    assert plans == [0] and report.steps == 3 and "fewer than 10" in report.skipped
    # on a busy machine the first steps spend the budget: it plans (and gives up) without finishing calibration
    _, busy = adapt_convtasnet(model, speech(), config, budget=StepBudget(4.0, 1000, min_steps=10),
                               clock=ScriptedClock(lambda k: 5.0))
    assert busy.steps == 1 and busy.planned_steps == 0 and busy.skipped
    for a, b in zip(adapted.parameters(), model.parameters(), strict=True):  # the model as shipped
        assert torch.equal(a, b)


def test_adaptation_stops_when_the_machine_gets_slower_than_planned(model):
    config = AdaptConfig(compile=False, steps=1000, batch_size=2, segment_s=0.25)
    plans = []
    _, report = adapt_convtasnet(model, speech(), config, budget=StepBudget(20.0, 1000),
                                 clock=ScriptedClock(lambda k: 1.0 if k < 3 else 10.0), on_plan=plans.append)
    # planned 3 + 17 at 1 s; then 10 s a step: 13, 23, 33 > 1.5 x 20 s after step 6
    assert report.planned_steps == 20 and report.steps == 6 and report.stopped_early == "over budget"
    assert plans == [20, 6]


def test_a_tiny_file_is_separated_unadapted_in_one_pass(model):
    audio = np.concatenate([talker(1, 3.0, 150, 700), talker(2, 3.0, 1200, 2800)])
    segments = [{"speaker": "A", "start_s": 0.0, "end_s": 3.0}, {"speaker": "B", "start_s": 3.0, "end_s": 6.0}]
    config = AdaptConfig(compile=False, steps=1000, batch_size=2, segment_s=0.25, min_speech_s=2.0)
    # 6 s at 0.5 s per second: 3 s, 1.5 s a step (0.75 s measured between the readings): not 10 steps
    budget = FileBudget(adapt_rtf=0.5, min_steps=10, ensemble_rtf=0.1)
    plans = []
    result = AdaptiveSeparator(model, config, ensemble=10, budget=budget, clock=TickingClock(0.75)).run(
        audio, RATE, segments, on_plan=plans.append)
    assert result.report.skipped and "budget" in result.report.skipped and plans == [0]
    assert result.speeds == [1.0] and result.sources.shape == (2, len(audio))


def test_the_ensemble_has_as_many_passes_as_fit_its_budget(model):
    audio = np.concatenate([talker(1, 3.0, 150, 700), talker(2, 3.0, 1200, 2800)])
    segments = [{"speaker": "A", "start_s": 0.0, "end_s": 3.0}, {"speaker": "B", "start_s": 3.0, "end_s": 6.0}]
    config = AdaptConfig(compile=False, steps=2, batch_size=2, segment_s=0.25, min_speech_s=2.0)
    # a pass reads as 1 s (two readings): 6 s x 0.5 = 3 s of passes -> 3 members (odd)
    budget = FileBudget(ensemble_rtf=0.5)
    plans = []
    result = AdaptiveSeparator(model, config, ensemble=10, budget=budget, clock=TickingClock(1.0)).run(
        audio, RATE, segments, on_plan=plans.append)
    assert result.report.steps == 2 and plans == [2]  # no adaptation budget: the fixed steps
    assert result.speeds == [0.92, 1.0, 1.08]


def test_the_fixed_recipe_is_reachable(model):
    fixed = OfflineConfig(adapt_budget_rtf=0.0, ensemble_budget_rtf=0.0, adapt_patience_steps=0,
                          adapt_compile=True)
    assert fixed.budget().steps(30.0, 1000) is None and fixed.budget().ensemble_s(30.0) is None
    audio = np.concatenate([talker(1, 3.0, 150, 700), talker(2, 3.0, 1200, 2800)])
    segments = [{"speaker": "A", "start_s": 0.0, "end_s": 3.0}, {"speaker": "B", "start_s": 3.0, "end_s": 6.0}]
    config = AdaptConfig(compile=False, steps=4, batch_size=2, segment_s=0.25, min_speech_s=2.0)
    result = AdaptiveSeparator(model, config, ensemble=4, budget=fixed.budget()).run(audio, RATE, segments)
    assert result.report.steps == 4 and result.report.budget_s is None and len(result.speeds) == 4


def test_free_cores_counts_the_idle_share_of_the_machine():
    from rtsep.compose import free_cores

    def reader(*samples):
        it = iter(samples)
        return lambda: next(it)

    waited = []
    assert free_cores(2, 0.25, reader((100.0, 100.0), (200.0, 100.0)), waited.append) == 1  # all busy: one
    assert waited == [0.25]
    assert free_cores(2, 0.25, reader((0.0, 0.0), (0.0, 100.0)), waited.append) == 2  # idle
    assert free_cores(4, 0.25, reader((0.0, 0.0), (50.0, 50.0)), waited.append) == 2  # half busy
    assert free_cores(2, 0.25, lambda: None, waited.append) == 2  # not readable: all
