"""In-session adaptation: fine-tune a copy of the Conv-TasNet on remixes of the session's own single-talker turns.

Our separator is trained on synthetic and pseudo-speaker voices; real talkers are far from them. A session,
though, contains real speech of exactly the talkers to separate: the diarizer finds the turns where only one of
them speaks. Remixing those turns (pairs of different talkers, random level ratio) gives training mixtures with
known sources, so a copy of the model can be fine-tuned on this session's voices, room and channel — in memory,
for this session only. Nothing here does I/O: the caller passes audio at the model rate and the speaker turns,
and gets the adapted model back.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rtsep.errors import ConfigError
from rtsep.separate.budget import FileBudget, Plateau, StepBudget, odd_members
from rtsep.separate.convtasnet import ConvTasNet, with_norm_memory
from rtsep.separate.ensemble import ensemble_speeds, separate_ensemble
from rtsep.separate.losses import pit_si_snr_loss
from rtsep.separate.postfilter import WienerConfig, wiener_postfilter
from rtsep.separate.purity import PurityFilter
from rtsep.stream.adaptation import (  # noqa: F401 - the live schedule and its material, re-exported
    AdaptationMaterial,
    AdaptationSchedule,
    Span,
    gather_speech,
    single_talker_spans,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 300  # optimiser steps (each one batch of remixes)
    # the peak: it decays to 1 % of this over the steps (cosine). Reference turns (bench/RESULTS.md): 300 steps at
    # 3e-3 reach what 600 steps at 1e-3 reach (4.11 / 4.19 dB; 300 at 1e-3: 3.52) in half the time
    learning_rate: float = 3e-3
    batch_size: int = 4
    segment_s: float = 2.0  # length of each training remix
    level_ratio_db: float = 5.0  # the two talkers are mixed at a level ratio drawn from +-level_ratio_db
    min_turn_s: float = 0.5  # single-talker turns shorter than this are not used
    edge_trim_s: float = 0.05  # cut from both ends of a turn (diarization boundaries are not exact)
    min_speech_s: float = 2.0  # a talker needs this much single-talker speech to take part
    max_grad_norm: float = 5.0
    # each training piece is played at a speed drawn from 1 +- this (pitch moves with it): more voices from the
    # few seconds a session has (reference turns, bench/RESULTS.md: 3.20 -> 3.52 dB with 0.08)
    speed_perturb: float = 0.08
    # the adapted weights are the mean of the weights after each of the last ``average_last`` share of the steps
    # (0: the last step's weights); averaging over the low-learning-rate tail smooths what a few seconds over-fit
    average_last: float = 0.0
    # compile the training step (forward, PIT loss, backward) with torch.compile; falls back to the plain step
    # when compiling fails. A step of 4 x 2 s on one CPU core takes 0.26 s instead of 0.63 s (bench/RESULTS.md); the
    # first compile on a machine takes ~95 s of one core, later processes reuse inductor's cache (~17 s)
    compile: bool = True
    seed: int = 0
    # early stopping: end when the running mean of the training SI-SNR has not risen by ``patience_min_delta_db``
    # for this many steps (rtsep.separate.budget.Plateau); 0: run every step
    patience_steps: int = 0
    patience_min_delta_db: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ConfigError("adaptation steps must be >= 0 and batch_size >= 1")
        if self.patience_steps < 0 or self.patience_min_delta_db < 0:
            raise ConfigError("adaptation patience_steps and patience_min_delta_db must be >= 0")
        if self.learning_rate <= 0 or self.segment_s <= 0 or self.min_speech_s <= 0:
            raise ConfigError("adaptation learning_rate, segment_s and min_speech_s must be > 0")
        if not 0.0 <= self.average_last <= 1.0:
            raise ConfigError("adaptation average_last must be within [0, 1]")


@dataclass
class AdaptReport:
    """What an adaptation did: who took part, with how much speech, and the training loss before / after."""

    speakers: list[str]
    speech_s: dict[str, float]
    steps: int = 0
    seconds: float = 0.0
    loss_first_db: float | None = None  # mean PIT SI-SNR of the first / last 10 % of steps (higher is better)
    loss_last_db: float | None = None
    skipped: str | None = None  # why no adaptation happened
    compiled: bool = False  # whether the steps ran through torch.compile
    budget_s: float | None = None  # the time budget it planned its steps in (None: a fixed step count)
    planned_steps: int | None = None  # the steps that budget afforded (before any early stop)
    stopped_early: str | None = None  # "plateau" (the loss stopped improving) or "over budget"
    losses_db: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "losses_db"}
        out["seconds"] = round(self.seconds, 2)
        return out


def remix_pair(a: np.ndarray, b: np.ndarray, ratio_db: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Mix two single-talker pieces (equal length) with ``a`` ``ratio_db`` louder than ``b``; both sources are
    returned at their level in the mixture, which peaks at most at ``level``."""
    power_a, power_b = float(np.mean(a**2)) + 1e-10, float(np.mean(b**2)) + 1e-10
    b = b * np.sqrt(power_a / power_b * 10 ** (-ratio_db / 10))
    sources = np.stack([a, b])
    peak = float(np.abs(sources.sum(0)).max()) + 1e-9
    sources = sources * (level / peak)
    return sources.sum(0).astype(np.float32), sources.astype(np.float32)


class RemixSampler:
    """Draws training remixes of two different talkers' single-talker speech (random pieces, levels, pairs)."""

    def __init__(self, speech: Mapping[str, np.ndarray], segment_samples: int, level_ratio_db: float,
                 rng: np.random.Generator, speed_perturb: float = 0.0) -> None:
        self.speakers = sorted(speech)
        if len(self.speakers) < 2:
            raise ValueError("remixes need single-talker speech of at least two talkers")
        self.speech = speech
        shortest = min(len(v) for v in speech.values())
        self.segment_samples = min(segment_samples, shortest)
        self.level_ratio_db = level_ratio_db
        self.rng = rng
        self.speed_perturb = speed_perturb
        self.pairs = list(itertools.combinations(self.speakers, 2))

    def _piece(self, speaker: str) -> np.ndarray:
        x = self.speech[speaker]
        speed = 1.0 + float(self.rng.uniform(-self.speed_perturb, self.speed_perturb)) if self.speed_perturb else 1.0
        span = min(len(x), int(np.ceil(self.segment_samples * speed)))
        start = int(self.rng.integers(0, len(x) - span + 1))
        piece = x[start : start + span]
        if speed == 1.0:
            return piece
        # play ``piece`` at ``speed``: read it at fractional positions (linear interpolation)
        positions = np.minimum(np.arange(self.segment_samples) * (span / self.segment_samples), span - 1)
        return np.interp(positions, np.arange(span), piece).astype(np.float32)

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(mixtures (count, T), sources (count, 2, T)) float32."""
        mixes, sources = [], []
        for _ in range(count):
            s1, s2 = self.pairs[int(self.rng.integers(len(self.pairs)))]
            ratio = float(self.rng.uniform(-self.level_ratio_db, self.level_ratio_db))
            mix, src = remix_pair(self._piece(s1), self._piece(s2), ratio, float(self.rng.uniform(0.3, 0.9)))
            mixes.append(mix)
            sources.append(src)
        return np.stack(mixes), np.stack(sources)


def adapt_convtasnet(
    model: ConvTasNet,
    speech: Mapping[str, np.ndarray],
    config: AdaptConfig = AdaptConfig(),
    progress: Callable[[int, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
    budget: StepBudget | None = None,
    clock: Callable[[], float] = time.perf_counter,
    on_plan: Callable[[int], None] | None = None,
) -> tuple[ConvTasNet, AdaptReport]:
    """Fine-tune a copy of ``model`` on remixes of ``speech`` (speaker -> single-talker audio at the model rate).

    ``model`` itself is not changed. Talkers with less than ``config.min_speech_s`` are left out; with fewer
    than two left, the copy is returned unchanged and the report says why. ``progress(step, si_snr_db)`` is
    called after every step; ``stop()`` is asked before every step, and when it says True the adaptation ends
    there, unused (``report.skipped == "stopped"``). Runs on the model's device with the caller's torch
    thread settings. It trains with plain cumulative norm statistics (2 s remixes, as the model was trained) and
    returns the copy with ``model``'s norm memory (ConvTasNetConfig.norm_memory_s), the one it separates with.

    With a ``budget`` (rtsep.separate.budget.StepBudget), ``config.steps`` is only the ceiling: the first
    ``budget.calibration_steps`` steps (fewer when they spend the whole budget) are timed with ``clock`` and the
    step count is planned from the rest of the budget (``on_plan(total)`` is told it, and told the steps run
    when it stops early); the learning rate's cosine decay runs over the planned count. When the budget affords
    fewer than ``budget.min_steps``, the copy is returned unchanged (``report.skipped``). A run that overshoots
    the budget by half (the machine got busier) ends there (``report.stopped_early``); so does one whose loss
    has plateaued (``config.patience_steps``)."""
    rate = model.config.sample_rate_hz
    given, memory_s = model, model.config.norm_memory_s
    model = with_norm_memory(model, 0.0)  # it trains on 2 s remixes, with plain statistics, as the model was trained
    lengths = {spk: len(x) / rate for spk, x in speech.items()}
    usable = {spk: np.asarray(x, np.float32) for spk, x in speech.items() if lengths[spk] >= config.min_speech_s}
    report = AdaptReport(speakers=sorted(usable), speech_s={k: round(v, 2) for k, v in sorted(lengths.items())})
    adapted = copy.deepcopy(model)
    if model.config.num_sources != 2:
        report.skipped = f"adaptation needs a 2-output model, this one has {model.config.num_sources}"
    elif len(usable) < 2:
        report.skipped = f"fewer than two talkers with >= {config.min_speech_s:g} s of single-talker speech"
    elif config.steps == 0:
        report.skipped = "steps = 0"
    if report.skipped:
        return with_norm_memory(adapted, memory_s).eval(), report

    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    sampler = RemixSampler(usable, int(config.segment_s * rate), config.level_ratio_db, rng, config.speed_perturb)
    device = model.device
    adapted.train()
    trained = list(adapted.parameters())
    optimiser = torch.optim.Adam(trained, lr=config.learning_rate)
    total = config.steps  # until a budget plans it
    average_from = _average_from(config, total)
    averaged: list[torch.Tensor] | None = None
    plateau = Plateau(config.patience_steps, config.patience_min_delta_db)
    loss_of = _compiled_training_loss() if config.compile else _training_loss
    if config.compile:  # otherwise nothing moves for the length of the compile
        log.info("adaptation: compiling the training step (first time on a machine ~95 s of a core, later ~17 s)")
    if budget is not None:
        report.budget_s = round(budget.budget_s, 2)
    started = clock()
    step_seconds: list[float] = []
    step = 0
    while step < total:
        if stop is not None and stop():
            report.skipped = "stopped"
            report.steps = step
            return given, report
        step_started = clock()
        for group in optimiser.param_groups:
            group["lr"] = cosine_lr(config.learning_rate, step, total)
        mixes, sources = sampler.draw(config.batch_size)
        mixes_t, sources_t = torch.from_numpy(mixes).to(device), torch.from_numpy(sources).to(device)
        optimiser.zero_grad(set_to_none=True)
        try:
            loss = loss_of(adapted, mixes_t, sources_t)
            loss.backward()  # the compiled backward is built here, on the first step
        except Exception as exc:  # compiling failed (no C++ compiler, an unsupported op): train on, uncompiled
            if loss_of is _training_loss or step > 0:
                raise
            log.warning("adaptation: torch.compile failed (%s: %s); training uncompiled", type(exc).__name__,
                        (str(exc).splitlines() or [""])[0])
            log.debug("adaptation: torch.compile's failure", exc_info=True)  # inductor's tracebacks are long
            loss_of = _training_loss
            optimiser.zero_grad(set_to_none=True)
            loss = loss_of(adapted, mixes_t, sources_t)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, config.max_grad_norm)
        optimiser.step()
        if average_from is not None and step >= average_from:
            averaged = _running_mean(averaged, trained, step - average_from)
        report.losses_db.append(-float(loss.detach()))
        step += 1
        now = clock()
        step_seconds.append(now - step_started)
        # plan after the calibration steps, or sooner when they already spent the budget (a busy machine)
        if budget is not None and report.planned_steps is None and (
                step == min(budget.calibration_steps, total) or now - started >= budget.budget_s):
            total = report.planned_steps = budget.plan(now - started, step_seconds)
            log.info("adaptation: %.2f s per step, %d step(s) in a %.0f s budget", sorted(step_seconds[1:] or
                     step_seconds)[len(step_seconds[1:] or step_seconds) // 2], total, budget.budget_s)
            if on_plan is not None:
                on_plan(total)
            if total == 0:
                report.skipped = (f"a {budget.budget_s:.0f} s budget affords fewer than {budget.min_steps} "
                                  "adaptation steps")
                report.steps, report.seconds = step, now - started
                return with_norm_memory(copy.deepcopy(model), memory_s).eval(), report
            average_from = _average_from(config, total)
        if progress is not None:
            progress(step, report.losses_db[-1])
        if step < total and plateau.update(report.losses_db[-1]):
            report.stopped_early = "plateau"
        elif step < total and budget is not None and now - started > 1.5 * budget.budget_s:
            report.stopped_early = "over budget"
        if report.stopped_early:
            log.info("adaptation: stopped after %d of %d steps (%s)", step, total, report.stopped_early)
            if on_plan is not None:
                on_plan(step)  # the count changed
            break
    if averaged is not None:
        with torch.no_grad():
            for param, mean in zip(trained, averaged, strict=True):
                param.copy_(mean)
    report.seconds = clock() - started
    report.steps = step
    report.compiled = loss_of is not _training_loss
    tenth = max(1, step // 10)
    report.loss_first_db = round(float(np.mean(report.losses_db[:tenth])), 2)
    report.loss_last_db = round(float(np.mean(report.losses_db[-tenth:])), 2)
    return with_norm_memory(adapted, memory_s).eval(), report


def cosine_lr(peak: float, step: int, total: int) -> float:
    """The learning rate of ``step`` (0-based) of ``total``: cosine decay from ``peak`` to 1 % of it."""
    floor = peak / 100
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _average_from(config: AdaptConfig, total: int) -> int | None:
    """The first step whose weights enter the average of the last ``config.average_last`` share of ``total``."""
    return total - max(1, round(config.average_last * total)) if config.average_last else None


def _training_loss(model: ConvTasNet, mixes: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """PIT SI-SNR loss of ``model`` on a batch of remixes (what one adaptation step minimises)."""
    return pit_si_snr_loss(model(mixes), sources)


@functools.cache
def _compiled_training_loss() -> Callable[[ConvTasNet, torch.Tensor, torch.Tensor], torch.Tensor]:
    """_training_loss through torch.compile, made once per process: the model is an argument, so the copies
    of later adaptations (same architecture, batch and segment length) reuse the compiled graphs."""
    return torch.compile(_training_loss)


def _running_mean(mean: list[torch.Tensor] | None, params: Iterable[torch.nn.Parameter],
                  count: int) -> list[torch.Tensor]:
    """The mean of ``count`` earlier parameter sets (``mean``) updated with ``params``."""
    with torch.no_grad():
        if mean is None:
            return [p.detach().clone() for p in params]
        for m, p in zip(mean, params, strict=True):
            m.add_(p.detach() - m, alpha=1.0 / (count + 1))
        return mean


def separate_offline(model: ConvTasNet, audio: np.ndarray, chunk_s: float = 10.0) -> np.ndarray:
    """Causal separation of a whole signal (mono, model rate) -> (num_sources, T), streamed in chunks so that
    memory stays bounded; equal to one forward over the signal."""
    c = model.config
    chunk = max(c.hop_samples, int(chunk_s * c.sample_rate_hz) // c.hop_samples * c.hop_samples)
    total = len(audio)
    padded = np.zeros(-(-(total + c.lookahead_samples) // c.hop_samples) * c.hop_samples, np.float32)
    padded[:total] = audio
    state = model.new_state()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(padded), chunk):
            piece = torch.from_numpy(padded[start : start + chunk]).to(model.device)
            outputs.append(model.stream(piece[None], [state])[0].cpu().numpy())
    out = np.concatenate(outputs, axis=1)
    return out[:, c.lookahead_samples : c.lookahead_samples + total]


def match_sources_to_speakers(sources: np.ndarray, rate_hz: int,
                              spans: Mapping[str, Sequence[Span]]) -> list[str | None]:
    """For each separated source, the speaker it carries: the one-to-one assignment of sources to speakers that
    maximises the summed share of each speaker's single-talker spans that lands in its source. Sources left
    without a speaker (more sources than speakers with spans) get None."""
    speakers = sorted(spk for spk, items in spans.items() if items)
    share = np.zeros((len(sources), len(speakers)))
    for j, spk in enumerate(speakers):
        idx = np.concatenate([np.arange(int(a * rate_hz), min(int(b * rate_hz), sources.shape[1]))
                              for a, b in spans[spk]])
        power = (sources[:, idx].astype(np.float64) ** 2).sum(1) if idx.size else np.zeros(len(sources))
        share[:, j] = power / (power.sum() + 1e-12)
    best: tuple[float, tuple] = (-1.0, ())
    choices = list(range(len(speakers))) + [-1] * len(sources)  # -1: no speaker
    for chosen in sorted(set(itertools.permutations(choices, len(sources)))):
        total = sum(share[k, j] for k, j in enumerate(chosen) if j >= 0)
        if total > best[0]:
            best = (total, chosen)
    return [speakers[j] if j >= 0 else None for j in best[1]]


class AdaptationStopped(Exception):
    """:meth:`AdaptiveSeparator.run` was asked to stop (its ``stop()`` said True): no sources."""


@dataclass
class AdaptedSeparation:
    """The result of :meth:`AdaptiveSeparator.run`: ``sources`` (num_sources, T) at the input rate, the speaker
    each source carries (None if unknown) and the adaptation report."""

    sources: np.ndarray
    rate_hz: int
    speakers: list[str | None]
    report: AdaptReport
    speeds: list[float] = field(default_factory=lambda: [1.0])  # the ensemble's playback speeds
    postfilter: WienerConfig | None = None  # the Wiener post-filter applied, None: off, or no adaptation ran


class AdaptiveSeparator:
    """Offline use of in-session adaptation: given a whole recording and its diarization, fine-tune a copy of the
    model on the recording's single-talker turns, then separate the recording with it (causally, as streaming
    would). The base model is shared and never changed. With a ``purity`` filter (rtsep.separate.purity), only the
    parts of the turns that sound like their talker are used. ``threads`` > 0: torch's CPU threads while it
    adapts (process-wide, restored afterwards; for a caller that has nothing else running meanwhile).
    ``ensemble`` > 1: the recording is separated at that many playback speeds spread over the adaptation's
    ``speed_perturb`` and the passes are averaged (rtsep.separate.ensemble). With ``postfilter``, the (averaged)
    sources are then re-estimated from the recording by a Wiener filter (rtsep.separate.postfilter), unless the
    adaptation was skipped. With a ``budget`` (rtsep.separate.budget.FileBudget), the adaptation's steps follow
    a time budget proportional to the recording's duration, ``config.steps`` being their ceiling, and the ensemble
    has as many members as fit its budget (at most ``ensemble``: the largest odd count, timed on the first pass)."""

    def __init__(self, model: ConvTasNet, config: AdaptConfig = AdaptConfig(),
                 purity: PurityFilter | None = None, threads: int = 0, ensemble: int = 1,
                 postfilter: WienerConfig | None = None, budget: FileBudget | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.model = model.eval()
        self.config = config
        self.purity = purity
        self.threads = threads
        self.speeds = ensemble_speeds(ensemble, config.speed_perturb)  # the most it runs
        self.postfilter = postfilter
        self.budget = budget or FileBudget()
        self.clock = clock

    def run(self, audio: np.ndarray, rate_hz: int, segments: Iterable[Mapping],
            progress: Callable[[int, float], None] | None = None,
            stop: Callable[[], bool] | None = None,
            on_plan: Callable[[int], None] | None = None) -> AdaptedSeparation:
        """``stop()`` is asked before every adaptation step and every separation pass (it runs in a thread that
        cannot be interrupted otherwise, e.g. by Ctrl-C); when it says True, :class:`AdaptationStopped`.
        ``on_plan(steps)``: the adaptation's step count once known (with a budget, after its first steps; 0 when it
        does not adapt)."""
        import soxr

        def check() -> None:
            if stop is not None and stop():
                raise AdaptationStopped("stopped")

        model_rate = self.model.config.sample_rate_hz
        audio = np.asarray(audio, np.float32)
        at_model_rate = audio if rate_hz == model_rate else soxr.resample(audio, rate_hz, model_rate).astype(np.float32)
        spans = single_talker_spans(segments, self.config.min_turn_s, self.config.edge_trim_s)
        if self.purity is not None:
            spans = self.purity.filter(audio, rate_hz, spans)
        speech = gather_speech(at_model_rate, model_rate, spans)
        check()
        speech_s = {spk: round(len(x) / model_rate, 1) for spk, x in speech.items()}
        duration_s = len(at_model_rate) / model_rate
        step_budget = self.budget.steps(duration_s, self.config.steps)
        will_adapt = self.config.steps > 0 and sum(s >= self.config.min_speech_s for s in speech_s.values()) >= 2
        if will_adapt and step_budget is not None:
            log.info("adapting the separator: up to %d steps in %.0f s on %s s of single-talker speech",
                     self.config.steps, step_budget.budget_s, speech_s)
        elif will_adapt:
            log.info("adapting the separator: %d steps on %s s of single-talker speech", self.config.steps, speech_s)
        if on_plan is not None and (not will_adapt or step_budget is None):
            on_plan(self.config.steps if will_adapt else 0)
        previous = torch.get_num_threads()
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        try:
            adapted, report = adapt_convtasnet(self.model, speech, self.config, progress, stop, step_budget,
                                               self.clock, on_plan)
        finally:
            torch.set_num_threads(previous)
        if report.skipped == "stopped":
            raise AdaptationStopped(f"stopped after {report.steps} adaptation step(s)")
        if report.skipped:
            log.info("adaptation skipped: %s", report.skipped)

        def one_pass(x: np.ndarray) -> np.ndarray:
            check()
            return separate_offline(adapted, x)

        speeds = list(self.speeds)
        ensemble_s = self.budget.ensemble_s(duration_s)
        reference = None
        if ensemble_s is not None and report.skipped is not None:
            speeds = [1.0]  # under a budget, the base model gets one pass: its sources are not yet apart
        elif ensemble_s is not None and len(speeds) > 1:
            started = self.clock()
            reference = one_pass(at_model_rate)
            members = odd_members(len(self.speeds), ensemble_s, self.clock() - started)
            speeds = ensemble_speeds(members, self.config.speed_perturb)
            log.info("separating at %d playback speed(s) in a %.1f s budget", members, ensemble_s)
        sources = separate_ensemble(one_pass, at_model_rate, model_rate, speeds, reference=reference)
        # only after adapting: on the base model's sources (not yet apart) the filter loses (rtsep.separate.postfilter)
        postfilter = self.postfilter if report.skipped is None else None
        if postfilter is not None:
            sources = wiener_postfilter(at_model_rate, sources, model_rate, postfilter)
        speakers = match_sources_to_speakers(sources, model_rate, spans)
        if rate_hz != model_rate:
            sources = np.stack([soxr.resample(s, model_rate, rate_hz) for s in sources])[:, : len(audio)]
        return AdaptedSeparation(sources.astype(np.float32), rate_hz, speakers, report, list(speeds), postfilter)
