"""Scoring: medians over paired seeds with misses, AlgoPerf performance ratios and profiles,
the benchmark score and the speed-up over NAdamW, checked against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from optzoo.bench import score


def _final(workload, algorithm, seed, steps, time=None, final=0.1, status="ok"):
    reached = steps is not None
    return {
        "workload": workload,
        "algorithm": algorithm,
        "seed": seed,
        "hyperparameters": {"lr": 0.1},
        "status": status,
        "steps_to_target": steps,
        "time_to_target_s": (time if time is not None else steps / 100) if reached else None,
        "cpu_time_to_target_s": steps / 200 if reached else None,
        "final_metric": final,
        "median_step_ms": 1.0,
        "state_bytes_per_param": 8.0,
        "peak_memory_bytes": 2**20 * seed,
    }


def test_median_over_seeds_counts_misses_as_infinite():
    records = [
        _final("w", "A", 1, 100),
        _final("w", "A", 2, None),
        _final("w", "A", 3, 300),
        _final("w", "B", 1, None),
        _final("w", "B", 2, None),
        _final("w", "B", 3, 50, status="ok"),
        _final("w", "C", 1, None, final=None, status="diverged"),
    ]
    summaries = score.summarize(records)
    a, b, c = (summaries[("w", n)] for n in "ABC")
    assert a.seeds == [1, 2, 3] and a.steps == [100, math.inf, 300]
    assert a.median_steps == 300 and a.reached == 2
    assert b.median_steps == math.inf  # misses on most seeds: a miss
    assert c.median_final_metric == math.inf and c.statuses == ["diverged"]
    assert a.peak_memory_bytes == 3 * 2**20 and a.state_bytes_per_param == 8.0


def _summaries(table):
    """{(workload, algorithm): steps} -> summaries with one seed each."""
    records = [_final(w, a, 1, s) for (w, a), s in table.items()]
    return score.summarize(records)


def test_performance_ratios_profile_and_score_by_hand():
    summaries = _summaries(
        {
            ("w1", "A"): 100,
            ("w1", "B"): 200,
            ("w1", "C"): 500,
            ("w2", "A"): 300,
            ("w2", "B"): 100,
            ("w2", "C"): None,
            ("w3", "A"): None,
            ("w3", "B"): None,
        }
    )
    ratios = score.performance_ratios(summaries)
    assert ratios["A"] == {"w1": 1.0, "w2": 3.0}  # w3: nobody reached it, left out
    assert ratios["B"] == {"w1": 2.0, "w2": 1.0}
    assert ratios["C"] == {"w1": math.inf, "w2": math.inf}  # 5x is past the 4x cut-off
    assert score.profile(ratios["A"], [1.0, 2.9, 3.0, 4.0]) == [0.5, 0.5, 1.0, 1.0]
    # rho_A = 1/2 on [1, 3), 1 on [3, 4]: area 1 + 1 = 2, over the width 3
    assert score.benchmark_score(ratios["A"]) == pytest.approx(2 / 3, abs=2e-3)
    # rho_B = 1/2 on [1, 2), 1 on [2, 4]: area 0.5 + 2 = 2.5
    assert score.benchmark_score(ratios["B"]) == pytest.approx(2.5 / 3, abs=2e-3)
    assert score.benchmark_score(ratios["C"]) == 0.0
    assert score.benchmark_score({"w": 1.0}) == pytest.approx(1.0)


def test_speedup_over_the_baseline_is_a_geometric_mean_and_ignores_new_entrants():
    table = {
        ("w1", "NAdamW"): 200,
        ("w1", "X"): 100,
        ("w2", "NAdamW"): 100,
        ("w2", "X"): 200,
        ("w3", "NAdamW"): 400,
        ("w3", "X"): 100,
        ("w4", "NAdamW"): None,
        ("w4", "X"): 100,
    }
    speedup, count = score.speedup_over(_summaries(table), "X")
    assert count == 3
    assert speedup == pytest.approx((2 * 0.5 * 4) ** (1 / 3))
    joined = _summaries({**table, ("w1", "Y"): 10, ("w2", "Y"): 10})
    assert score.speedup_over(joined, "X") == (pytest.approx(speedup), 3)
    assert math.isnan(score.speedup_over(_summaries({("w", "X"): 5}), "X")[0])


def test_standings_order_by_score_and_count_targets():
    summaries = _summaries(
        {("w1", "NAdamW"): 100, ("w1", "X"): 150, ("w2", "NAdamW"): 100, ("w2", "X"): None}
    )
    top, second = score.standings(summaries)
    assert top.algorithm == "NAdamW" and top.score == pytest.approx(1.0)
    assert top.reached == 2 and top.workloads == 2
    assert second.algorithm == "X" and second.reached == 1
    # X: ratio 1.5 on w1, miss on w2: rho = 0 below 1.5, 1/2 after -> (2.5 / 2) / 3
    assert second.score == pytest.approx(1.25 / 3, abs=2e-3)
    assert second.speedup == pytest.approx(100 / 150) and second.speedup_workloads == 1
