"""The target-setting pass: what counts as "within 3/4 of the budget", the NAdamW reference,
the loss-only fallback pool, and the shared fork-server data cache."""

from __future__ import annotations

import dataclasses
import math

import pytest

from optzoo.bench.benchmark import TIME_CAP_FACTOR, time_cap
from optzoo.bench.set_targets import best_within, pool_for, set_targets
from optzoo.bench.store import CurvePoint, Store
from optzoo.bench.workloads import WORKLOADS, Workload, get_workload, load_all_data
from tests.bench.test_store import make_result


def stored(tmp_path, curve, status="ok", time_budget_s=20.0):
    store = Store(tmp_path)
    result = make_result(status=status, curve=curve)
    trial = dataclasses.replace(result.trial, max_steps=400, time_budget_s=time_budget_s)
    store.add(dataclasses.replace(result, trial=trial))
    return store, store.trials()[0]


def test_best_within_counts_only_points_inside_three_quarters_of_steps_and_time(tmp_path):
    curve = [
        CurvePoint(0, 0.0, 0.0, None, 0.9),
        CurvePoint(100, 5.0, 5.0, 0.7, 0.6),
        CurvePoint(200, 16.0, 16.0, 0.6, 0.4),  # past 3/4 of the 20 s cap
        CurvePoint(300, 14.0, 14.0, 0.5, 0.5),
        CurvePoint(400, 19.0, 19.0, 0.4, 0.1),  # past 3/4 of the 400 steps
    ]
    store, record = stored(tmp_path, curve)
    assert best_within(store, record) == 0.5
    assert best_within(store, record, fraction=1.0) == 0.1
    failed_store, failed = stored(tmp_path / "failed", curve, status="failed")
    assert best_within(failed_store, failed) == math.inf


def test_target_pass_uses_the_benchmarks_time_cap():
    workload = get_workload("nondiff_digits_quick")
    assert time_cap(workload, workload.max_steps) == TIME_CAP_FACTOR * workload.time_budget_s
    assert time_cap(workload, workload.max_steps // 2) == pytest.approx(
        TIME_CAP_FACTOR * workload.time_budget_s / 2
    )


def test_loss_only_workload_falls_back_to_the_registered_algorithms_that_serve_it():
    members, fallback = pool_for(get_workload("nondiff_digits_quick"))
    assert fallback
    assert {m.oracle for m in members} == {"loss_closure"}
    assert {"CBO", "ZerothOrder"} <= {m.name for m in members}
    members, fallback = pool_for(get_workload("mnist1d_mlp_quick"))
    assert not fallback and {m.name for m in members} == {
        "NAdamW",
        "AdamW",
        "SGDMomentum",
        "SGDNesterov",
    }


def test_pass_takes_the_nadamw_reference_median_over_fresh_seeds(tmp_path):
    store = Store(tmp_path)
    targets, results = set_targets(
        ["least_squares_noisy_quick"],
        store,
        pool=("NAdamW", "SGDMomentum"),
        tuning_budget=2,
        seeds=(100, 101, 102),
        workers=0,
    )
    found = {r.algorithm: r for r in results["least_squares_noisy_quick"]}
    assert set(found) == {"NAdamW", "SGDMomentum"}
    assert all(len(r.values) == 3 and all(map(math.isfinite, r.values)) for r in found.values())
    target = targets["least_squares_noisy_quick"]
    assert target.target == pytest.approx(found["NAdamW"].median, rel=1e-5)
    assert "NAdamW" in target.how and "3 seeds" in target.how
    finals = store.trials(phase="targets", algorithm="NAdamW")
    assert {r["seed"] for r in finals} >= {0, 100, 101, 102}
    with pytest.raises(ValueError, match="tuning seed"):
        set_targets(["least_squares_noisy_quick"], store, seeds=(0, 1), workers=0)


def test_each_data_set_is_loaded_once_for_all_workloads_sharing_it(monkeypatch):
    calls = []

    def loader():
        calls.append(1)
        return "data"

    base = WORKLOADS["logistic"]
    shared = {
        name: Workload(**{**base.__dict__, "name": name, "data": loader})
        for name in ("shared_a", "shared_b")
    }
    from optzoo.bench.workloads import base as base_module

    monkeypatch.setattr(base_module, "_WORKLOADS", {**WORKLOADS, **shared})
    load_all_data()
    assert len(calls) == 1
    # Every built-in workload with a data set declares its loader (so trials share it).
    for name in ("mnist1d_mlp_quick", "mnist1d_cnn_quick", "nondiff_digits_quick", "char_lm"):
        assert WORKLOADS[name].data is not None
