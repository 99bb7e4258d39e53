"""Tuning with the same budget for every algorithm: ``budget`` configurations per workload, drawn
from the algorithm's search space on the tuning seed, then one fresh-seed rerun of the winner.

For a space with one log range (the default: the learning rate) the configurations are a
log-spaced grid from ``low`` to ``high``; with several hyperparameters they are the first
``budget`` points of a scrambled Sobol sequence with a fixed seed (AlgoPerf's quasi-random
search). An algorithm with an empty space runs its defaults once. A winner whose value of a
range hyperparameter lies on the edge of the range is flagged, and the grid is widened: two
more points beyond that edge, at the same spacing (``widen``). Optuna is not used, so the
store holds no foreign tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from optzoo.bench.algorithms import SearchSpace

WIDEN_POINTS = 2


def _check_space(space: SearchSpace) -> None:
    for name, values in space.items():
        if isinstance(values, tuple):
            if len(values) != 2 or not 0 < values[0] <= values[1]:
                raise ValueError(
                    f"search range of {name!r} must be (low, high) with 0 < low <= high, "
                    f"got {values!r}"
                )
        elif not isinstance(values, list) or not values:
            raise ValueError(
                f"search space of {name!r} must be a (low, high) tuple or a non-empty list, "
                f"got {values!r}"
            )


def _log_grid(low: float, high: float, count: int) -> list[float]:
    if count == 1 or low == high:
        return [math.sqrt(low * high)]
    step = (math.log(high) - math.log(low)) / (count - 1)
    return [_round(math.exp(math.log(low) + i * step)) for i in range(count)]


def _round(value: float) -> float:
    """Four significant digits, so configurations print and hash cleanly."""
    return float(f"{value:.4g}")


def configurations(space: SearchSpace, budget: int) -> list[dict[str, Any]]:
    """The ``budget`` configurations tried for ``space`` (one when the space is empty)."""
    if budget < 1:
        raise ValueError(f"the tuning budget must be >= 1 configuration, got {budget}")
    _check_space(space)
    if not space:
        return [{}]
    names = sorted(space)
    if len(names) == 1 and isinstance(space[names[0]], tuple):
        low, high = space[names[0]]  # type: ignore[misc]
        return [{names[0]: v} for v in _log_grid(low, high, budget)]
    engine = torch.quasirandom.SobolEngine(len(names), scramble=True, seed=0)
    points = engine.draw(budget).double().tolist()
    found = []
    for point in points:
        config: dict[str, Any] = {}
        for name, u in zip(names, point, strict=True):
            values = space[name]
            if isinstance(values, tuple):
                low, high = values
                config[name] = _round(math.exp(math.log(low) + u * math.log(high / low)))
            else:
                config[name] = values[min(len(values) - 1, int(u * len(values)))]
        found.append(config)
    return found


def edges(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, str]:
    """The range hyperparameters of ``config`` that sit on an edge of ``space``: name ->
    ``"low"`` or ``"high"``."""
    found = {}
    for name, values in space.items():
        if not isinstance(values, tuple) or name not in config or values[0] == values[1]:
            continue
        value = float(config[name])
        if value <= values[0] * (1 + 1e-3):
            found[name] = "low"
        elif value >= values[1] * (1 - 1e-3):
            found[name] = "high"
    return found


def widen(space: SearchSpace, budget: int, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Configurations beyond the edges ``config`` sits on: ``WIDEN_POINTS`` more points per
    edge hyperparameter, at the grid spacing (empty when ``config`` is inside the space)."""
    extra = []
    for name, side in edges(space, config).items():
        low, high = space[name]  # type: ignore[misc]
        ratio = (high / low) ** (1 / max(1, budget - 1))
        factor = ratio if side == "high" else 1 / ratio
        for k in range(1, WIDEN_POINTS + 1):
            extra.append({**config, name: _round(float(config[name]) * factor**k)})
    return extra


@dataclass(frozen=True)
class Ranked:
    """A tuning trial's rank key: reached the target first, then fewer steps to it, then a
    lower best metric; failed or diverged trials rank last."""

    record: Mapping[str, Any]

    @property
    def key(self) -> tuple[float, float, float]:
        record = self.record
        if record["status"] != "ok" or record.get("best_metric") is None:
            return (2.0, math.inf, math.inf)
        steps = record.get("steps_to_target")
        best = float(record["best_metric"])
        if steps is not None:
            return (0.0, float(steps), best)
        return (1.0, math.inf, best)


def best_record(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best stored tuning trial (see ``Ranked``), or None when there is none; ties keep
    the first (the lower configuration of the grid)."""
    ranked = sorted(records, key=lambda r: (Ranked(r).key, r["id"]))
    return ranked[0] if ranked else None


def merge(base: Mapping[str, Any], configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``configs`` on top of fixed hyperparameters ``base``."""
    return [{**base, **c} for c in configs]
