"""The benchmark protocol: configs and their errors, oracle dispatch, tuning -> widening ->
final stages into one store, resume, the report rebuilt from the store alone, and a
deliberately bad configuration (learning rate 10x too high) scored worse than a good one."""

from __future__ import annotations

import base64
import re
from dataclasses import replace

import pytest

import optzoo
from optzoo.bench import algorithms, benchmark, score
from optzoo.bench.algorithms import BASELINES, BenchAlgorithm, resolve_algorithm
from optzoo.bench.benchmark import BenchConfig, make_config, pairs, run_benchmark
from optzoo.bench.report import render, write_report
from optzoo.bench.store import Store
from optzoo.bench.workloads import get_workload, workloads_in_suite

pytestmark = pytest.mark.filterwarnings("ignore::optzoo.bench.runner.ContendedMachineWarning")

WORKLOAD = "least_squares_noisy_quick"
TARGET = 0.1


def _fixed_nadamw(lr: float):
    def build(params, **hyperparameters):
        return optzoo.NAdamW(params, **{"lr": lr, **hyperparameters})

    return BenchAlgorithm(
        name=f"NAdamW_lr{lr:g}", family="test", paper="test", oracle="gradient", build=build
    )


GOOD, BAD = _fixed_nadamw(0.1), _fixed_nadamw(1.0)  # 1.0: ten times the good rate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small in-process benchmark: the good and the bad configuration (no search space:
    one tuning trial each) and SGD with Nesterov momentum (a 3-point grid), two paired seeds."""
    patch = pytest.MonkeyPatch()
    patch.setitem(BASELINES, GOOD.name, GOOD)
    patch.setitem(BASELINES, BAD.name, BAD)
    patch.setitem(
        BASELINES,
        "SGDNesterov",
        replace(BASELINES["SGDNesterov"], search_space={"lr": (0.01, 0.1)}),
    )
    config = BenchConfig(
        algorithms=(GOOD.name, BAD.name, "SGDNesterov"),
        workloads=(WORKLOAD,),
        tuning_budget=3,
        seeds=(1, 2),
        max_steps=350,
        suite="quick",
        targets={WORKLOAD: TARGET},
    )
    folder = tmp_path_factory.mktemp("bench")
    with Store(folder) as store:
        run_benchmark(config, store, workers=0)
    yield config, folder
    patch.undo()


def test_stages_tune_on_seed_zero_then_run_the_winner_on_fresh_paired_seeds(run):
    config, folder = run
    with Store(folder) as store:
        tuning = store.trials(phase="tune")
        finals = store.trials(phase="final")
        assert {(r["algorithm"], r["seed"]) for r in tuning} == {
            (GOOD.name, 0),
            (BAD.name, 0),
            ("SGDNesterov", 0),
        }
        sgd = [r for r in tuning if r["algorithm"] == "SGDNesterov"]
        lrs = sorted(r["hyperparameters"]["lr"] for r in sgd)
        assert lrs[:3] == [0.01, 0.03162, 0.1] or lrs == [0.001, 0.003162, 0.01, 0.03162, 0.1]
        picks = benchmark.chosen(config, store)
        sgd_pick = picks[(WORKLOAD, "SGDNesterov")]["hyperparameters"]
        best = min(sgd, key=lambda r: (r["steps_to_target"] or 1e9, r["best_metric"]))
        assert sgd_pick == best["hyperparameters"]
        for name in (GOOD.name, BAD.name, "SGDNesterov"):
            mine = [r for r in finals if r["algorithm"] == name]
            assert sorted(r["seed"] for r in mine) == [1, 2]
            assert all(r["schedule"]["name"] == "warmup_cosine" for r in mine)
            assert all(r["target"] == TARGET and r["max_steps"] == 350 for r in mine)
        assert all(r["implementation"]["optimizer"] for r in finals)
        assert all(r["threads"] == 1 and r["load_start"] is not None for r in finals)
        assert benchmark.stored_config(store) == config


def test_learning_rate_ten_times_too_high_is_scored_worse(run):
    _, folder = run
    with Store(folder) as store:
        summaries = score.summarize(store.trials(phase="final"))
    good, bad = summaries[(WORKLOAD, GOOD.name)], summaries[(WORKLOAD, BAD.name)]
    assert good.reached == 2
    assert good.median_steps < bad.median_steps
    ranks = {s.algorithm: s for s in score.standings(summaries)}
    assert ranks[GOOD.name].score > ranks[BAD.name].score


def test_resume_runs_nothing_new_and_other_options_are_refused(run):
    config, folder = run
    with Store(folder) as store:
        before = len(store)
        run_benchmark(config, store, workers=0, resume=True)
        assert len(store) == before
        with pytest.raises(ValueError, match="holds another benchmark run"):
            run_benchmark(replace(config, seeds=(1, 2, 3)), store, workers=0)
        with pytest.raises(ValueError, match="other options"):
            run_benchmark(replace(config, seeds=(1, 2, 3)), store, workers=0, resume=True)


def test_report_is_self_contained_html_rebuilt_from_the_store(run):
    _, folder = run
    path = write_report(folder)
    text = path.read_text()
    assert text.startswith("<!doctype html>")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    # two profiles, then curves vs steps, vs time, and LR sensitivity for the workload
    assert len(images) == 5
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<script" not in text and 'src="http' not in text
    for header in ("time to target", "final metric", "step ms", "state B/param", "peak MiB"):
        assert header in text
    assert GOOD.name in text and WORKLOAD in text
    with Store(folder) as store:
        assert render(store) == text  # the store alone decides the page


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown algorithm 'Adamm'"):
        make_config(algorithms=["Adamm"])
    with pytest.raises(ValueError, match="unknown workload"):
        make_config(workloads=["mnist2d"])
    with pytest.raises(ValueError, match="unknown suite"):
        make_config(suite="medium")
    with pytest.raises(ValueError, match="must be fresh"):
        make_config(seeds=[0, 1])
    with pytest.raises(ValueError, match="tuning budget"):
        make_config(tuning_budget=0)


def test_each_algorithm_runs_only_where_its_oracle_is_served(monkeypatch):
    trainer = BenchAlgorithm("LocalTrainer", "local_learning", "p", "layer_local", build=object)
    loss_only = BenchAlgorithm("LossOnly", "gradient_free", "p", "loss_closure", build=object)
    monkeypatch.setitem(algorithms.BASELINES, trainer.name, trainer)
    monkeypatch.setitem(algorithms.BASELINES, loss_only.name, loss_only)
    config = make_config(suite="quick")
    assert "LocalTrainer" not in config.algorithms  # trainers own their loop: not benchmarked
    assert {"NAdamW", "SGDNesterov", "LossOnly"} <= set(config.algorithms)
    found = pairs(config)
    assert found and all(a.oracle in w.oracles for a, w in found)
    nondiff = {a.name for a, w in found if w.name == "nondiff_digits_quick"}
    assert "LossOnly" in nondiff and "NAdamW" not in nondiff
    cnn = {a.name for a, w in found if w.name == "mnist1d_cnn_quick"}
    assert "NAdamW" in cnn and "LossOnly" not in cnn
    assert {w.name for w in workloads_in_suite("quick")} == set(config.workloads)
    assert resolve_algorithm("NAdamW").oracle in get_workload(WORKLOAD).oracles
