"""The trial runner: outcomes (ok / target / diverged / failed / crashed), clocks and harness
overhead, worker processes, and a real kill-and-resume of a benchmark run.

Workloads here are tiny fakes with the interface of ``optzoo.bench.workloads.Workload``; worker
processes find them by ``"module:attribute"`` names. One test also runs a real workload when
``optzoo.bench.workloads`` is importable.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.functional import mse_loss

import optzoo
from optzoo.bench import runner
from optzoo.bench.runner import (
    ContendedMachineWarning,
    Progress,
    Trial,
    make_schedule,
    make_step,
    run_trial,
    run_trials,
)
from optzoo.bench.store import Store

REPO = Path(__file__).resolve().parents[2]
ALL_ORACLES = frozenset({"gradient", "gradient_closure", "loss_closure", "per_sample_residuals"})


# --------------------------------------------------------------------------------------------
# Fake workloads
# --------------------------------------------------------------------------------------------


class RegressionTask:
    """Least squares on fixed batches: ``model`` maps ``dim`` inputs to one output."""

    def __init__(self, seed: int, model: nn.Module, dim: int, batch_size: int = 32) -> None:
        g = torch.Generator().manual_seed(seed)
        teacher = torch.randn(dim, 1, generator=g) / dim**0.5
        self.x = torch.randn(8, batch_size, dim, generator=g)
        self.y = self.x @ teacher + 0.05 * torch.randn(8, batch_size, 1, generator=g)
        self.x_eval = torch.randn(256, dim, generator=g)
        self.y_eval = self.x_eval @ teacher
        self.model = model

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = step % len(self.x)
        return self.x[i], self.y[i]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return mse_loss(self.model(x), y)

    def residuals(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return (self.model(x) - y).squeeze(-1)

    def evaluate(self) -> float:
        return mse_loss(self.model(self.x_eval), self.y_eval).item()


def build_linear(seed: int) -> RegressionTask:
    return RegressionTask(seed, nn.Linear(16, 1), 16)


def build_mlp(seed: int) -> RegressionTask:
    """A step of a few milliseconds on one thread."""
    model = nn.Sequential(nn.Linear(256, 384), nn.Tanh(), nn.Linear(384, 384), nn.Tanh())
    model.append(nn.Linear(384, 1))
    return RegressionTask(seed, model, 256, batch_size=128)


def build_segfault(seed: int) -> RegressionTask:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable")


def build_hang(seed: int) -> RegressionTask:
    time.sleep(120)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class FakeWorkload:
    name: str
    build: Callable[[int], Any]
    eval_every: int = 10
    max_steps: int = 100
    time_budget_s: float = 30.0
    oracles: frozenset[str] = ALL_ORACLES
    metric: str = "mse"
    description: str = "test workload"
    suite: str = "test"


LINEAR = FakeWorkload("linear", build_linear)
MLP = FakeWorkload("mlp", build_mlp, eval_every=20)
SEGFAULT = FakeWorkload("segfault", build_segfault)
HANG = FakeWorkload("hang", build_hang)
LOSS_ONLY = FakeWorkload("loss_only", build_linear, oracles=frozenset({"loss_closure"}))


def name(workload: str) -> str:
    """The name worker processes resolve this module's fake workload by."""
    return f"{__name__}:{workload}"


def linear_trial(seed: int = 0, **changes: Any) -> Trial:
    fields: dict[str, Any] = {
        "algorithm": "AdamW",
        "workload": name("LINEAR"),
        "seed": seed,
        "max_steps": 100,
        "time_budget_s": 30.0,
        "hyperparameters": {"lr": 0.05},
    }
    return Trial(**{**fields, **changes})


# --------------------------------------------------------------------------------------------
# run_trial
# --------------------------------------------------------------------------------------------


def test_trial_records_curve_clocks_and_state():
    result = run_trial(linear_trial())
    assert result.status == "ok", result.error
    assert result.steps_run == 100 and result.steps_to_target is None
    assert [p.step for p in result.curve] == list(range(0, 101, 10))
    assert result.curve[0].train_loss is None and result.curve[0].wall_s == 0.0
    walls = [p.wall_s for p in result.curve]
    assert walls == sorted(walls) and walls[-1] <= result.wall_s
    assert result.curve[-1].eval_metric == result.final_metric < result.curve[0].eval_metric
    assert result.best_metric == min(p.eval_metric for p in result.curve)
    assert result.curve[-1].train_loss < result.curve[1].train_loss
    assert result.eval_s > 0 and result.cpu_s > 0 and result.median_step_ms > 0
    assert result.state_bytes_per_param == optzoo.get("AdamW").state_bytes_per_param == 8
    assert result.peak_memory_bytes > 10 * 2**20
    env = result.environment
    assert env.threads == 1 and env.torch_version == torch.__version__ and env.cpu_count >= 1
    assert env.implementation["optimizer"].endswith("AdamW")
    assert result.created_at < result.finished_at


def test_same_seed_same_curve_other_seed_differs():
    first, again, other = (run_trial(linear_trial(seed=s)) for s in (3, 3, 4))
    metrics = [[p.eval_metric for p in r.curve] for r in (first, again, other)]
    assert metrics[0] == metrics[1] != metrics[2]


def test_stops_at_target():
    result = run_trial(linear_trial(target=0.05, max_steps=1000))
    assert result.status == "ok"
    assert result.steps_to_target is not None and result.steps_to_target % 10 == 0
    assert result.steps_run == result.steps_to_target < 1000
    last = result.curve[-1]
    assert last.eval_metric <= 0.05 < result.curve[-2].eval_metric
    assert (result.time_to_target_s, result.cpu_time_to_target_s) == (last.wall_s, last.cpu_s)


def test_stops_at_time_budget():
    result = run_trial(linear_trial(max_steps=10**7, time_budget_s=0.3))
    assert result.status == "ok" and 10 < result.steps_run < 10**7
    assert 0.3 <= result.wall_s < 1.0
    assert result.curve[-1].step == result.steps_run  # evaluated where it stopped


def test_huge_learning_rate_diverges():
    result = run_trial(linear_trial(hyperparameters={"lr": 1e4}))
    assert result.status == "diverged" and result.error is None
    assert result.steps_run == 10  # caught at the first evaluation point


def test_exceptions_are_recorded_as_failed():
    invalid = run_trial(linear_trial(hyperparameters={"lr": -1.0}))
    assert invalid.status == "failed" and "ValueError" in invalid.error and "lr" in invalid.error
    raising = run_trial(linear_trial(hyperparameters={"lr": 1e38, "on_nonfinite": "raise"}))
    assert raising.status == "failed" and "FloatingPointError" in raising.error
    assert 0 < raising.steps_run < 10 and raising.curve  # the partial curve is kept
    unknown = run_trial(linear_trial(algorithm="NoSuchOptimizer"))
    assert unknown.status == "failed" and "unknown algorithm" in unknown.error


def test_unsupported_oracle_fails_clearly():
    result = run_trial(linear_trial(workload=name("LOSS_ONLY")))
    assert result.status == "failed" and "needs the 'gradient' oracle" in result.error


def test_warmup_cosine_schedule():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = make_schedule(opt, "warmup_cosine", {"warmup_fraction": 0.1}, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5) and lrs[-1] < 0.001
    with pytest.raises(ValueError, match="unknown schedule 'cosine_restarts'"):
        make_schedule(opt, "cosine_restarts", {}, 10)
    trial = linear_trial(schedule="warmup_cosine", schedule_args={"warmup_fraction": 0.2})
    result = run_trial(trial)
    assert result.status == "ok" and result.final_metric < result.curve[0].eval_metric


@pytest.mark.parametrize("oracle", ["gradient_closure", "loss_closure", "per_sample_residuals"])
def test_closure_oracles(oracle):
    task = build_linear(0)
    seen: list[tuple[torch.Tensor, bool]] = []

    class Recording(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        def step(self, closure):
            value = closure()
            seen.append((value, self.param_groups[0]["params"][0].grad is not None))
            return value

    step = make_step(task, Recording(task.model.parameters()), oracle, None)
    loss = step(task.batch(0))
    value, has_grad = seen[0]
    assert not loss.requires_grad and loss.shape == ()
    if oracle == "per_sample_residuals":
        assert value.shape == (32,) and value.requires_grad
        assert loss == pytest.approx(task.loss(task.batch(0)).item())
    else:
        assert loss == value.detach()
        assert has_grad == (oracle == "gradient_closure")


def test_lbfgs_through_the_gradient_closure():
    task = build_linear(0)
    lbfgs = torch.optim.LBFGS(task.model.parameters(), max_iter=5)
    step = make_step(task, lbfgs, "gradient_closure", None)
    first = step(task.batch(0))
    for i in range(1, 5):
        last = step(task.batch(i))
    assert last < first


def test_harness_overhead_under_five_percent():
    result = run_trial(Trial("AdamW", name("MLP"), 0, max_steps=150, hyperparameters={"lr": 1e-3}))
    assert result.status == "ok", result.error
    assert result.median_step_ms > 1.0  # a step of a few milliseconds
    print(f"overhead {result.overhead_s:.4f} s of {result.wall_s:.3f} s")
    assert result.overhead_fraction < 0.05


def test_real_workload_if_available():
    workloads = pytest.importorskip("optzoo.bench.workloads")
    registered = workloads.WORKLOADS
    registered = list(registered.values() if isinstance(registered, Mapping) else registered)
    candidates = [w for w in registered if "gradient" in w.oracles]
    workload = min(candidates, key=lambda w: ("logistic" not in w.name, w.name))
    steps = min(workload.max_steps, 2 * workload.eval_every, 100)
    trial = Trial("NAdamW", workload.name, 0, max_steps=steps, time_budget_s=5.0)
    result = run_trial(trial)
    assert result.status in ("ok", "diverged"), result.error
    assert result.curve[0].step == 0 and result.curve[-1].step == result.steps_run
    assert result.final_metric is not None and result.wall_s > 0
    # A gross bound only (evaluation counted as training would break it): the harness's
    # overhead is measured by benchmarks/harness_overhead.py, not by a timed test; in a
    # 0.13 s run on a shared machine one page fault or collection moves it by 5%.
    assert result.overhead_fraction < 0.5


# --------------------------------------------------------------------------------------------
# run_trials
# --------------------------------------------------------------------------------------------


def test_failures_and_crashes_are_recorded_while_the_others_finish(tmp_path):
    trials = [
        linear_trial(0),
        linear_trial(1, hyperparameters={"lr": 1e38, "on_nonfinite": "raise"}),
        linear_trial(2, workload=name("SEGFAULT")),
        linear_trial(3, hyperparameters={"lr": 1e4}),
        linear_trial(4),
    ]
    events: list[Progress] = []
    with Store(tmp_path) as store:
        results = run_trials(trials, store, workers=2, progress=events.append)
        rows = {row["seed"]: row for row in store.trials()}
    assert len(results) == 5 and sorted(rows) == [0, 1, 2, 3, 4]
    assert [rows[s]["status"] for s in range(5)] == ["ok", "failed", "failed", "diverged", "ok"]
    assert "FloatingPointError" in rows[1]["error"]
    assert "killed by SIGSEGV" in rows[2]["error"]
    assert rows[0]["error"] is None and rows[0]["final_metric"] < 0.1
    assert events[0].event == "start" and events[0].total == 5
    assert [e.done for e in events if e.event == "result"] == [1, 2, 3, 4, 5]


def test_a_hanging_worker_is_killed_at_the_hard_limit(tmp_path):
    with Store(tmp_path) as store:
        started = time.monotonic()
        (result,) = run_trials([linear_trial(workload=name("HANG"))], store, hard_timeout_s=1.0)
        assert time.monotonic() - started < 20
        assert store.trials()[0]["status"] == "failed"
    assert result.status == "failed" and "hard time limit" in result.error


def test_resume_skips_stored_trials(tmp_path):
    trials = [linear_trial(0, max_steps=20), linear_trial(1, max_steps=20)]
    with Store(tmp_path) as store:
        assert len(run_trials(trials[:1], store, workers=0)) == 1
        events: list[Progress] = []
        again = run_trials(trials + trials, store, workers=0, progress=events.append)
        assert [r.trial.seed for r in again] == [1]  # duplicates collapse, stored ones skipped
        assert (events[0].done, events[0].total) == (1, 2)
        assert run_trials(trials, store, workers=0) == []
        with pytest.raises(ValueError, match="already holds 2 of these trials"):
            run_trials(trials, store, resume=False)


def test_contended_machine_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "load_average", lambda: 1000.0)
    events: list[Progress] = []
    with Store(tmp_path) as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_trials([linear_trial(max_steps=5)], store, workers=0, progress=events.append)
        row = store.trials()[0]
    assert [w.category for w in caught] == [ContendedMachineWarning]  # once per run
    assert next(e.message for e in events if e.event == "warning").startswith("load average 1000")
    assert row["load_start"] == row["load_end"] == 1000.0


# --------------------------------------------------------------------------------------------
# Kill and resume
# --------------------------------------------------------------------------------------------

BENCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from optzoo.bench.runner import Trial, run_trials
    from optzoo.bench.store import Store

    workload, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    trials = [Trial("AdamW", workload, s, max_steps=60, hyperparameters={"lr": 1e-3})
              for s in range(count)]

    def progress(event):
        if event.event == "result":
            print("stored", event.result.key, flush=True)

    with Store(path) as store:
        results = run_trials(trials, store, workers=1, resume=True, progress=progress)
    print("ran", json.dumps([r.key for r in results]), flush=True)
    """
)


def start_bench(path: Path, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}
    command = [sys.executable, "-c", BENCH_SCRIPT, name("MLP"), str(path), str(count)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def stored_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def snapshot(path: Path) -> tuple[dict[str, dict], list[tuple]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    trials = {row["key"]: dict(row) for row in db.execute("SELECT * FROM trials")}
    curves = [tuple(row) for row in db.execute("SELECT * FROM curves ORDER BY trial_id, step")]
    db.close()
    return trials, curves


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_kill_and_resume_loses_no_finished_trial(tmp_path):
    path, count = tmp_path / "bench.sqlite", 6
    bench = start_bench(path, count)
    deadline = time.monotonic() + 60
    while stored_count(path) < 1:
        assert bench.poll() is None, "the bench ended before it could be killed"
        assert time.monotonic() < deadline, "no trial was stored within 60 s"
        time.sleep(0.02)
    helpers = descendants(bench.pid)  # fork server, resource tracker, the running worker
    assert len(helpers) >= 2 or not Path("/proc").exists()
    bench.send_signal(signal.SIGKILL)
    output, _ = bench.communicate()
    assert bench.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in helpers), "processes of the killed run kept running"
    before, curves_before = snapshot(path)
    reported = [line.split()[1] for line in output.splitlines() if line.startswith("stored")]
    assert 1 <= len(before) < count
    assert set(reported) <= set(before)  # every trial reported as stored survived the kill

    resumed = start_bench(path, count)
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    ran = json.loads(output.splitlines()[-1].removeprefix("ran "))
    after, curves_after = snapshot(path)
    assert len(after) == count and len(ran) == count - len(before)
    assert not set(ran) & set(before)  # nothing finished before the kill was run again
    for key, row in before.items():
        assert after[key] == row  # same id, timestamps and figures
    before_ids = {row["id"] for row in before.values()}
    assert [c for c in curves_after if c[0] in before_ids] == curves_before
    assert all(row["status"] == "ok" for row in after.values())


def test_loss_only_algorithms_evaluate_their_population_in_one_vectorized_call():
    """A loss-value optimizer on a task with ``functional_loss`` takes ``step_population`` (one
    vmapped call), with the same update as its closure loop, and records the lowest loss."""
    from optzoo.bench.workloads import get_workload
    from optzoo.gradient_free import EvolutionStrategy

    class ClosureOnly:  # the same task without functional_loss: the closure loop
        def __init__(self, task):
            self.model, self.task, self.seen = task.model, task, []

        def loss(self, batch):
            value = self.task.loss(batch)
            self.seen.append(float(value))
            return value

    outcomes = []
    for vectorized in (True, False):
        task = get_workload("mnist1d_mlp").build(0)
        opt = EvolutionStrategy(task.model.parameters(), num_directions=4, seed=0)
        calls = []
        population_step = opt.step_population
        opt.step_population = lambda fn, c=calls, f=population_step: c.append(1) or f(fn)
        closure_only = ClosureOnly(task)
        step = make_step(task if vectorized else closure_only, opt, "loss_closure", None)
        batch = task.batch(0)
        loss = step(batch)
        assert len(calls) == (1 if vectorized else 0)
        params = torch.cat([p.detach().reshape(-1) for p in task.model.parameters()])
        outcomes.append((float(loss), params))
    (loss_v, params_v), (loss_c, params_c) = outcomes
    assert loss_v == pytest.approx(loss_c, rel=1e-5)
    torch.testing.assert_close(params_v, params_c, rtol=1e-5, atol=1e-6)
    assert len(closure_only.seen) == 8 and loss_c == min(closure_only.seen)  # the lowest
