"""The benchmark's trial runner: one trial = (algorithm, hyperparameters, schedule, workload,
seed, budget), trained in its own worker process and written to the store as soon as it ends.

``run_trial`` trains one trial in the calling process and returns a ``TrialResult``: the curve
(evaluation points with training wall time, process CPU time, train loss and eval metric),
steps and time to target, median step time, optimizer-state bytes per parameter and peak
memory. It never raises for a trial's own failure: an exception is recorded as ``"failed"``
with its traceback, a non-finite loss or metric, or a loss above ``DIVERGENCE_FACTOR`` times
the first one, as ``"diverged"``.

``run_trials`` runs the trials a store does not hold yet, each in a fresh worker process (so a
trial that leaks memory or crashes cannot affect another, and peak memory is the trial's own),
and stores each result in the parent the moment it arrives. A worker that dies without a
result (segfault, out-of-memory kill) or runs far past its budget is recorded as failed with
the reason, and the run goes on.

Clocks follow AlgoPerf: training time excludes evaluation. Harness overhead (``overhead_s``) is
the part of training time outside the algorithm's own forward, backward, optimizer and
scheduler step: batch creation, timing and bookkeeping. The hot loop reads two clocks per step
and keeps losses on the device; they are copied to the host only at evaluation points.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import multiprocessing
import os
import platform
import random
import signal
import socket
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from optzoo.bench.store import PHASES, CurvePoint, Store, trial_key

DIVERGENCE_FACTOR = 1e3
StepFn = Callable[[Any], torch.Tensor]


class ContendedMachineWarning(RuntimeWarning):
    """The load average exceeded the number of cores: wall times are inflated."""


# --------------------------------------------------------------------------------------------
# Trials and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One benchmark trial.

    ``workload`` is a registered workload name, or ``"module:attribute"`` naming a workload
    object elsewhere (a user's own workload). ``schedule`` is an LR schedule name (see
    ``make_schedule``) with ``schedule_args``; the schedule spans ``max_steps``. The trial stops
    at ``target`` (eval metric <= target; ``None``: never), after ``max_steps`` steps, or when
    its training time reaches ``time_budget_s`` (``None``: no time limit).
    """

    algorithm: str
    workload: str
    seed: int
    max_steps: int
    time_budget_s: float | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    schedule_args: Mapping[str, Any] = field(default_factory=dict)
    target: float | None = None
    phase: str = "final"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0 or None, got {self.time_budget_s}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.schedule is None and self.schedule_args:
            raise ValueError("schedule_args given without a schedule")

    @property
    def key(self) -> str:
        """Stable hash of what defines this trial (the store's unique key)."""
        schedule = None if self.schedule is None else {"name": self.schedule, **self.schedule_args}
        return trial_key(
            phase=self.phase,
            algorithm=self.algorithm,
            hyperparameters=self.hyperparameters,
            schedule=schedule,
            workload=self.workload,
            seed=self.seed,
            max_steps=self.max_steps,
            time_budget_s=self.time_budget_s,
            target=self.target,
        )


@dataclass(frozen=True)
class Environment:
    """Where a trial ran: threads, load average (1 min) at start and end, versions, flags."""

    threads: int
    cpu_count: int
    load_start: float | None
    load_end: float | None
    torch_version: str
    hostname: str
    implementation: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialResult:
    """What one trial produced (one row of the store's ``trials`` table plus its curve).

    ``wall_s`` / ``cpu_s``: training time (all steps and the harness around them), excluding
    evaluation (``eval_s``) and building the task and optimizer (``setup_s``);
    ``overhead_s``: the part of ``wall_s`` outside the algorithm's own step.
    """

    trial: Trial
    status: str
    environment: Environment
    created_at: str
    finished_at: str
    error: str | None = None
    steps_run: int = 0
    steps_to_target: int | None = None
    time_to_target_s: float | None = None
    cpu_time_to_target_s: float | None = None
    final_metric: float | None = None
    best_metric: float | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    eval_s: float = 0.0
    setup_s: float = 0.0
    overhead_s: float = 0.0
    median_step_ms: float | None = None
    state_bytes_per_param: float | None = None
    peak_memory_bytes: int | None = None
    curve: list[CurvePoint] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.trial.key

    @property
    def overhead_fraction(self) -> float:
        """Harness overhead as a fraction of training wall time."""
        return self.overhead_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    """An event of ``run_trials``: ``"start"`` (``done`` counts trials already stored),
    ``"result"`` (one trial finished and was stored) or ``"warning"`` (``message``)."""

    event: str
    done: int
    total: int
    result: TrialResult | None = None
    message: str | None = None


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def resolve_workload(name: str) -> Any:
    """The workload called ``name``: ``"module:attribute"`` imports it, any other name is
    looked up in ``optzoo.bench.workloads``."""
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
        return found
    from optzoo.bench.workloads import get_workload

    return get_workload(name)


def _warmup_cosine(total: int, warmup_fraction: float = 0.05, final_factor: float = 0.0):
    warmup = max(1, round(warmup_fraction * total)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _warmup_linear(total: int, warmup_fraction: float = 0.0, final_factor: float = 0.0):
    warmup = max(1, round(warmup_fraction * total)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1 - (1 - final_factor) * progress

    return factor


# The runner's own LR multipliers (step -> factor of the base LR), applied with LambdaLR.
SCHEDULES: dict[str, Callable[..., Callable[[int], float]]] = {
    "constant": lambda total: lambda step: 1.0,
    "warmup_cosine": _warmup_cosine,
    "warmup_linear": _warmup_linear,
}


def make_schedule(
    optimizer: torch.optim.Optimizer, name: str, args: Mapping[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """An LR scheduler over ``total_steps``: ``"constant"``, ``"warmup_cosine"`` (linear warm-up
    over ``warmup_fraction`` of the steps, default 0.05, then cosine decay to ``final_factor``
    times the base LR, default 0) or ``"warmup_linear"`` (warm-up then linear decay)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}")
    factor = SCHEDULES[name](total_steps, **args)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def state_bytes_per_param(optimizer: torch.optim.Optimizer) -> float | None:
    """Bytes of optimizer-state tensors per parameter element (0-d tensors excluded, shared
    storage counted once)."""
    numel = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    if numel == 0:
        return None
    seen: set[int] = set()
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                continue
            storage = value.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total / numel


def peak_memory_bytes() -> int | None:
    """Peak resident memory of this process so far (``getrusage`` maxrss), or None."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_count() -> int:
    """Cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> float | None:
    """1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# The benchmark's own workers fill the cores (load about equal to their count), so only a load
# beyond the cores by more than this margin means other processes compete.
CONTENTION_MARGIN = 0.5


def contended(load: float | None, cores: int) -> bool:
    """Whether a 1-minute ``load`` average on ``cores`` cores means other work competes."""
    return load is not None and load > cores + CONTENTION_MARGIN


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _implementation_flags(optimizer: Any) -> dict[str, Any]:
    """Which code path the optimizer ran (read after training: a failed compile shows)."""
    cls = type(optimizer)
    compiled = None
    uses_compiled = getattr(optimizer, "_use_compiled", None)  # optzoo's RuleOptimizer
    groups = optimizer.param_groups
    if uses_compiled is not None and groups and groups[0]["params"]:
        compiled = bool(uses_compiled(groups[0]["params"]))
    return {
        "optimizer": f"{cls.__module__}.{cls.__qualname__}",
        "implementation": getattr(optimizer, "implementation", None),
        "compiled": compiled,
        "compile_failed": getattr(optimizer, "_compile_failed", None),
        "OPTZOO_IMPLEMENTATION": os.environ.get("OPTZOO_IMPLEMENTATION"),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "python": platform.python_version(),
    }


def _environment(threads: int, load_start: float | None, flags: dict[str, Any]) -> Environment:
    return Environment(
        threads=threads,
        cpu_count=cpu_count(),
        load_start=load_start,
        load_end=load_average(),
        torch_version=torch.__version__,
        hostname=socket.gethostname(),
        implementation=flags,
    )


# --------------------------------------------------------------------------------------------
# One training step per oracle
# --------------------------------------------------------------------------------------------


def _gradient_step(task: Any, optimizer: Any) -> StepFn:
    loss_of = task.loss

    def step(batch: Any) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _closure_step(task: Any, optimizer: Any, oracle: str) -> StepFn:
    loss_of = task.loss
    residuals_of = getattr(task, "residuals", None)
    if oracle == "per_sample_residuals" and residuals_of is None:
        raise ValueError("the workload's task has no residuals(batch) for this algorithm")
    if oracle == "per_sample_losses":
        residuals_of = getattr(task, "per_sample_losses", None)
        if residuals_of is None:
            raise ValueError(
                "the workload's task has no per_sample_losses(batch) for this algorithm"
            )

    def step(batch: Any) -> torch.Tensor:
        first: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            if oracle == "gradient_closure":
                optimizer.zero_grad(set_to_none=True)
                value = loss_of(batch)
                value.backward()
                loss = value.detach()
            elif oracle == "loss_closure":
                with torch.no_grad():
                    value = loss = loss_of(batch)
            elif oracle == "per_sample_losses":  # the recorded loss is their mean
                value = residuals_of(batch)
                loss = value.detach().mean()
            else:  # per-sample residuals; the recorded loss is their mean square
                value = residuals_of(batch)
                loss = value.detach().square().mean()
            if not first:
                first.append(loss)
            return value

        best = optimizer.step(closure)
        if oracle == "loss_closure" and isinstance(best, torch.Tensor):
            return best.detach()  # the lowest loss among the candidates
        return first[0]

    return step


# Candidates per vectorized call of a population step: bounds the memory of one call (PolyStep
# asks ~1.5 candidates per parameter) while keeping the batched forward passes large.
POPULATION_CHUNK = 512


def _population_step(task: Any, optimizer: Any) -> StepFn:
    """A loss-only step that evaluates the whole population in one vectorized call
    (``step_population`` + ``vectorized_loss``: ``torch.func.functional_call`` under ``vmap``)."""
    from optzoo.gradient_free import vectorized_loss

    model, functional_loss = task.model, task.functional_loss

    def step(batch: Any) -> torch.Tensor:
        loss_fn = vectorized_loss(
            model, lambda params: functional_loss(params, batch), POPULATION_CHUNK
        )
        best = optimizer.step_population(loss_fn)
        if best is None:  # a skipped step (every candidate non-finite): the centre's loss
            with torch.no_grad():
                return task.loss(batch).detach()
        return best

    return step


def make_step(task: Any, optimizer: Any, oracle: str, scheduler: Any | None) -> StepFn:
    """One training step for ``oracle``: returns the (detached, on-device) loss at the
    parameters before the update; for a loss-only algorithm, the lowest loss among the
    candidates it evaluated (its population is evaluated in one vectorized call where the
    optimizer has ``step_population`` and the task a ``functional_loss``)."""
    inner = _gradient_step(task, optimizer) if oracle == "gradient" else None
    vectorized = hasattr(optimizer, "step_population") and hasattr(task, "functional_loss")
    if oracle == "loss_closure" and vectorized:
        inner = _population_step(task, optimizer)
    if inner is None:
        inner = _closure_step(task, optimizer, oracle)
    if scheduler is None:
        return inner

    def step(batch: Any) -> torch.Tensor:
        loss = inner(batch)
        scheduler.step()
        return loss

    return step


# --------------------------------------------------------------------------------------------
# run_trial
# --------------------------------------------------------------------------------------------


class _TrialRun:
    """The state of one trial while it trains (clocks, curve, outcome)."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.created_at = _now()
        self.load_start = load_average()
        self.status = "ok"
        self.error: str | None = None
        self.curve: list[CurvePoint] = []
        self.step_times: list[float] = []
        self.window: list[torch.Tensor] = []
        self.initial_loss: float | None = None
        self.eval_wall = self.eval_cpu = self.setup_s = 0.0
        self.wall_s = self.cpu_s = 0.0
        self.reached: CurvePoint | None = None
        self.optimizer: Any = None

    # -- set-up -------------------------------------------------------------------------------
    def setup(self) -> None:
        from optzoo.bench.algorithms import resolve_algorithm

        start = time.perf_counter()
        trial = self.trial
        workload = resolve_workload(trial.workload)
        spec = resolve_algorithm(trial.algorithm)
        if spec.oracle not in workload.oracles:
            raise ValueError(
                f"{spec.name} needs the {spec.oracle!r} oracle; workload {trial.workload!r} "
                f"offers {sorted(workload.oracles)}"
            )
        _seed_everything(trial.seed)
        self.task = workload.build(trial.seed)
        self.eval_every = max(1, int(workload.eval_every))
        self.optimizer = spec.build(self.task.model.parameters(), **trial.hyperparameters)
        scheduler = None
        if trial.schedule is not None:
            scheduler = make_schedule(
                self.optimizer, trial.schedule, trial.schedule_args, trial.max_steps
            )
        self.step_fn = make_step(self.task, self.optimizer, spec.oracle, scheduler)
        self.setup_s = time.perf_counter() - start

    # -- training -----------------------------------------------------------------------------
    def train(self) -> None:
        trial, perf = self.trial, time.perf_counter
        self.origin, self.cpu_origin = perf(), time.process_time()
        budget = math.inf if trial.time_budget_s is None else trial.time_budget_s
        self.deadline = self.origin + budget
        try:
            if not self._checkpoint(0, self.origin):
                self._loop(perf)
        finally:
            self.wall_s = perf() - self.origin - self.eval_wall
            self.cpu_s = time.process_time() - self.cpu_origin - self.eval_cpu

    def _loop(self, perf: Callable[[], float]) -> None:
        step_fn, batch_of = self.step_fn, self.task.batch
        step_times, window = self.step_times, self.window
        eval_every, max_steps = self.eval_every, self.trial.max_steps
        for step in range(1, max_steps + 1):
            batch = batch_of(step - 1)
            started = perf()
            loss = step_fn(batch)
            finished = perf()
            step_times.append(finished - started)
            window.append(loss)
            last = step == max_steps or finished >= self.deadline
            if (last or step % eval_every == 0) and (self._checkpoint(step, finished) or last):
                return

    def _checkpoint(self, step: int, at: float) -> bool:
        """Record an evaluation point after ``step`` steps (ended at clock ``at``); return
        whether the trial stops here (diverged or target reached)."""
        train_loss, diverged = self._drain_losses()
        wall = at - self.origin - self.eval_wall
        cpu = time.process_time() - self.cpu_origin - self.eval_cpu
        metric = self._evaluate()
        point = CurvePoint(step, wall, cpu, train_loss, metric)
        self.curve.append(point)
        if diverged or not math.isfinite(metric):
            self.status = "diverged"
            return True
        target = self.trial.target
        if target is not None and metric <= target:
            self.reached = point
            return True
        return False

    def _drain_losses(self) -> tuple[float | None, bool]:
        if not self.window:
            return None, False
        losses = torch.stack(self.window).float().tolist()
        self.window.clear()
        if self.initial_loss is None:
            self.initial_loss = losses[0]
        limit = DIVERGENCE_FACTOR * abs(self.initial_loss) if self.initial_loss else math.inf
        diverged = not all(math.isfinite(x) and x <= limit for x in losses)
        return statistics.fmean(losses), diverged

    def _evaluate(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        model = self.task.model
        model.eval()
        try:
            with torch.no_grad():
                metric = float(self.task.evaluate())
        finally:
            model.train()
            spent = time.perf_counter() - wall
            self.eval_wall += spent
            self.eval_cpu += time.process_time() - cpu
            self.deadline += spent
        return metric

    # -- outcome ------------------------------------------------------------------------------
    def fail(self, error: str) -> None:
        self.status, self.error = "failed", error

    def result(self) -> TrialResult:
        metrics = [p.eval_metric for p in self.curve if p.eval_metric is not None]
        finite = [m for m in metrics if math.isfinite(m)]
        reached, optimizer = self.reached, self.optimizer
        flags = {} if optimizer is None else _implementation_flags(optimizer)
        return TrialResult(
            trial=self.trial,
            status=self.status,
            error=self.error,
            environment=_environment(self.trial.threads, self.load_start, flags),
            created_at=self.created_at,
            finished_at=_now(),
            steps_run=len(self.step_times),
            steps_to_target=None if reached is None else reached.step,
            time_to_target_s=None if reached is None else reached.wall_s,
            cpu_time_to_target_s=None if reached is None else reached.cpu_s,
            final_metric=metrics[-1] if metrics else None,
            best_metric=min(finite) if finite else None,
            wall_s=self.wall_s,
            cpu_s=self.cpu_s,
            eval_s=self.eval_wall,
            setup_s=self.setup_s,
            overhead_s=max(0.0, self.wall_s - math.fsum(self.step_times)),
            median_step_ms=1e3 * statistics.median(self.step_times) if self.step_times else None,
            state_bytes_per_param=None if optimizer is None else state_bytes_per_param(optimizer),
            peak_memory_bytes=peak_memory_bytes(),
            curve=self.curve,
        )


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed(seed % 2**32)


def run_trial(trial: Trial) -> TrialResult:
    """Train one trial in this process (with ``trial.threads`` torch threads) and return its
    result; an exception inside the trial is recorded as a failed result, never raised."""
    previous_threads = torch.get_num_threads()
    run = _TrialRun(trial)
    try:
        torch.set_num_threads(trial.threads)
        run.setup()
        run.train()
    except Exception:
        run.fail(traceback.format_exc())
    finally:
        torch.set_num_threads(previous_threads)
    return run.result()


# --------------------------------------------------------------------------------------------
# run_trials: worker processes
# --------------------------------------------------------------------------------------------


def _worker_main(trial: Trial, connection: Connection) -> None:
    """Entry point of a worker process: run one trial and send its result to the parent."""
    _exit_with_parent()
    result = run_trial(trial)
    connection.send(result)
    connection.close()


def _exit_with_parent() -> None:
    """Make this worker exit at once if the parent dies (killed runs leave no orphans)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(75)

    threading.Thread(target=watch, name="optzoo-parent-watch", daemon=True).start()


# Imported once by the fork server, so a worker starts in ~10 ms instead of ~4 s (torch, and
# torch._dynamo, which torch.optim imports on first use), with every workload's data set loaded
# (``_preload``). Missing modules are skipped.
PRELOAD = (
    "torch",
    "torch._dynamo",
    "optzoo",
    "optzoo.bench.runner",
    "optzoo.bench.workloads",
    "optzoo.bench.workloads._preload",
)


def _context(trials: Iterable[Trial]) -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    workload_modules = {t.workload.partition(":")[0] for t in trials if ":" in t.workload}
    # Takes effect when the server starts (the first run of this process).
    context.set_forkserver_preload([*PRELOAD, *sorted(workload_modules)])
    return context


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "the worker did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {exitcode}"


def _lost_result(trial: Trial, error: str, created_at: str, load_start: float | None):
    return TrialResult(
        trial=trial,
        status="failed",
        error=error,
        environment=_environment(trial.threads, load_start, {}),
        created_at=created_at,
        finished_at=_now(),
    )


@dataclass
class _Running:
    process: multiprocessing.process.BaseProcess
    trial: Trial
    created_at: str
    load_start: float | None
    deadline: float


class _WorkerPool:
    """Runs trials in fresh worker processes, at most ``workers`` at a time."""

    def __init__(self, workers: int, hard_timeout_s: float | None, trials: list[Trial]) -> None:
        self.workers = workers
        self.hard_timeout_s = hard_timeout_s
        self.context = _context(trials)
        self.running: dict[Connection, _Running] = {}

    def _timeout(self, trial: Trial) -> float:
        if self.hard_timeout_s is not None:
            return self.hard_timeout_s
        if trial.time_budget_s is None:
            return math.inf
        return 3 * trial.time_budget_s + 120.0

    def _start(self, trial: Trial) -> None:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(  # type: ignore[attr-defined]
            target=_worker_main, args=(trial, sender), name="optzoo-trial", daemon=True
        )
        load_start, created_at = load_average(), _now()
        process.start()
        sender.close()
        deadline = time.monotonic() + self._timeout(trial)
        self.running[receiver] = _Running(process, trial, created_at, load_start, deadline)

    def _collect(self, receiver: Connection) -> TrialResult:
        job = self.running.pop(receiver)
        try:
            result: TrialResult = receiver.recv()
        except (EOFError, OSError):
            job.process.join()
            reason = _exit_reason(job.process.exitcode)
            return _lost_result(job.trial, reason + " before returning a result", *_meta(job))
        finally:
            receiver.close()
        job.process.join(timeout=30)
        if job.process.is_alive():
            job.process.kill()
            job.process.join()
        return result

    def _expire(self) -> list[TrialResult]:
        now, expired = time.monotonic(), []
        for receiver, job in list(self.running.items()):
            if now >= job.deadline:
                job.process.kill()
                job.process.join()
                receiver.close()
                del self.running[receiver]
                error = f"the trial ran past its hard time limit of {self._timeout(job.trial)} s"
                expired.append(_lost_result(job.trial, error, *_meta(job)))
        return expired

    def run(self, trials: Iterable[Trial]) -> Iterator[TrialResult]:
        """Yield each trial's result as soon as it arrives (in completion order)."""
        pending = deque(trials)
        try:
            while pending or self.running:
                while pending and len(self.running) < self.workers:
                    self._start(pending.popleft())
                nearest = min(job.deadline for job in self.running.values())
                timeout = None if nearest == math.inf else max(0.0, nearest - time.monotonic())
                for receiver in wait(list(self.running), timeout=timeout):
                    yield self._collect(receiver)  # type: ignore[arg-type]
                yield from self._expire()
        finally:
            self._stop_all()

    def _stop_all(self) -> None:
        for receiver, job in self.running.items():
            job.process.kill()
            job.process.join()
            receiver.close()
        self.running.clear()


def _meta(job: _Running) -> tuple[str, float | None]:
    return job.created_at, job.load_start


# --------------------------------------------------------------------------------------------
# run_trials
# --------------------------------------------------------------------------------------------


def _todo(trials: Iterable[Trial], store: Store, resume: bool) -> tuple[list[Trial], int]:
    unique: dict[str, Trial] = {}
    for trial in trials:
        unique.setdefault(trial.key, trial)
    stored = store.keys() & unique.keys()
    if stored and not resume:
        raise ValueError(
            f"{store.path} already holds {len(stored)} of these trials; resume the run "
            "(resume=True, `--resume`) or use a new output folder"
        )
    return [t for k, t in unique.items() if k not in stored], len(stored)


class _LoadMonitor:
    """Warns once per run when the load average exceeds the number of cores."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self.cores = cpu_count()
        self.notify = notify
        self.warned = False

    def check(self, load: float | None) -> None:
        if self.warned or not contended(load, self.cores):
            return
        self.warned = True
        message = (
            f"load average {load:.2f} exceeds the {self.cores} cores: the machine is contended "
            "and wall times are inflated (steps to target are not affected)"
        )
        warnings.warn(message, ContendedMachineWarning, stacklevel=4)
        self.notify(message)


def run_trials(
    trials: Iterable[Trial],
    store: Store,
    *,
    workers: int = 1,
    resume: bool = True,
    progress: Callable[[Progress], None] | None = None,
    hard_timeout_s: float | None = None,
) -> list[TrialResult]:
    """Run every trial that ``store`` does not hold yet and store each result as it arrives.

    ``workers`` trials run at once, each in a fresh worker process (``workers=0`` runs them in
    this process, without isolation: for debugging). With ``resume=False`` a store that
    already holds any of the trials is an error. A worker that dies without a result, or runs
    past ``hard_timeout_s`` (default 3x the trial's time budget + 120 s), is recorded as failed.
    ``progress`` receives a ``Progress`` event at the start, after each stored trial, and for
    warnings (machine contended: also a ``ContendedMachineWarning``). Returns the results of
    the trials run now, in completion order.

    Workers start by the "forkserver" method ("spawn" where it is missing), so a script that
    calls this must guard its entry point with ``if __name__ == "__main__":``.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    todo, done = _todo(trials, store, resume)
    total = done + len(todo)

    def emit(event: str, **kwargs: Any) -> None:
        if progress is not None:
            progress(Progress(event, done, total, **kwargs))

    monitor = _LoadMonitor(lambda message: emit("warning", message=message))
    emit("start")
    if workers > monitor.cores:
        emit("warning", message=f"{workers} workers on {monitor.cores} cores: timings contend")
    monitor.check(load_average())
    if workers == 0:
        source: Iterator[TrialResult] = (run_trial(t) for t in todo)
    else:
        source = _WorkerPool(workers, hard_timeout_s, todo).run(todo)
    results = []
    with contextlib.closing(source):
        for result in source:
            store.add(result)
            results.append(result)
            done += 1
            emit("result", result=result)
            monitor.check(result.environment.load_end)
    return results
