"""Tuning: the same number of configurations for everyone, edges flagged and widened, and the
ranking of tuning trials."""

from __future__ import annotations

import math

import pytest

from optzoo.bench import tune
from optzoo.bench.algorithms import (
    BASELINES,
    DEFAULT_LR_SPAN,
    bench_algorithms,
    resolve_algorithm,
)


def test_one_log_range_is_a_log_spaced_grid_with_both_ends():
    configs = tune.configurations({"lr": (1e-4, 1e-0)}, 5)
    assert [c["lr"] for c in configs] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert tune.configurations({"lr": (1e-3, 1e-1)}, 1) == [{"lr": pytest.approx(1e-2)}]


def test_empty_space_runs_the_defaults_once():
    assert tune.configurations({}, 7) == [{}]


def test_several_hyperparameters_draw_a_fixed_quasi_random_sample():
    space = {"lr": (1e-4, 1e-1), "beta": [0.9, 0.95, 0.99]}
    first = tune.configurations(space, 8)
    assert first == tune.configurations(space, 8)  # fixed seed
    assert len(first) == 8
    assert all(1e-4 <= c["lr"] <= 1e-1 and c["beta"] in (0.9, 0.95, 0.99) for c in first)
    assert len({c["lr"] for c in first}) == 8
    assert {c["beta"] for c in first} == {0.9, 0.95, 0.99}


@pytest.mark.parametrize(
    ("space", "budget", "message"),
    [
        ({"lr": (1e-2, 1e-3)}, 3, "low <= high"),
        ({"lr": (0.0, 1.0)}, 3, "0 < low"),
        ({"lr": []}, 3, "non-empty list"),
        ({"lr": (1e-3, 1e-1)}, 0, "budget must be >= 1"),
    ],
)
def test_bad_spaces_and_budgets_are_clear_errors(space, budget, message):
    with pytest.raises(ValueError, match=message):
        tune.configurations(space, budget)


def test_edges_are_flagged_and_widened_at_the_grid_spacing():
    space = {"lr": (1e-3, 1e-1)}
    assert tune.edges(space, {"lr": 1e-3}) == {"lr": "low"}
    assert tune.edges(space, {"lr": 1e-1}) == {"lr": "high"}
    assert tune.edges(space, {"lr": 1e-2}) == {}
    # grid 1e-3, 1e-2, 1e-1 (factor 10): two more points beyond the edge
    assert tune.widen(space, 3, {"lr": 1e-1, "wd": 0.1}) == [
        {"lr": 1.0, "wd": 0.1},
        {"lr": 10.0, "wd": 0.1},
    ]
    assert tune.widen(space, 3, {"lr": 1e-3}) == [{"lr": 1e-4}, {"lr": 1e-5}]
    assert tune.widen(space, 3, {"lr": 1e-2}) == []


def _record(i, status="ok", steps=None, best=1.0):
    return {"id": i, "status": status, "steps_to_target": steps, "best_metric": best}


def test_ranking_prefers_reaching_the_target_then_fewer_steps_then_lower_metric():
    records = [
        _record(1, best=0.01),  # never reached, lowest metric
        _record(2, steps=300, best=0.5),
        _record(3, steps=200, best=0.6),
        _record(4, status="diverged", best=None),
    ]
    assert tune.best_record(records)["id"] == 3
    assert tune.best_record([records[0], records[3]])["id"] == 1
    assert tune.best_record([_record(5, best=0.2), _record(6, best=0.1)])["id"] == 6
    assert tune.best_record([records[3]])["id"] == 4  # only failures: still one pick
    assert tune.best_record([]) is None


def test_default_search_space_rule_and_calibrated_baselines():
    adamw = resolve_algorithm("AdamW")
    assert adamw.search_space == {"lr": (1e-4, 3e-1)}  # calibrated (wider than the rule)
    lion = resolve_algorithm("lion")  # case-insensitive, default rule around lr = 1e-4
    low, high = lion.search_space["lr"]
    assert low == pytest.approx(1e-4 / DEFAULT_LR_SPAN) and high == pytest.approx(
        1e-4 * 31.62, rel=1e-3
    )
    assert math.isclose(math.sqrt(low * high), lion.defaults["lr"])
    assert BASELINES["SGDNesterov"].oracle == "gradient"
    names = [a.name for a in bench_algorithms()]
    assert "NAdamW" in names and "SGDMomentum" in names
    with pytest.raises(ValueError, match="unknown algorithm"):
        resolve_algorithm("NAdamWW")
