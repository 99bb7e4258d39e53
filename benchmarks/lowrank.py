"""Low-rank optimizers: state memory, steady-state step time and projector-refresh time, in one run.

The tensors are those of ``step_time.py`` (12 x 1024x1024, 12 x 1024x512, 40 x 1024 float32,
~19M parameters; ``--scale`` shrinks the matrices' rows), with fixed random gradients, rank 128.
Compared, each on its own copy of the parameters:

- anchors: ``torch.optim.AdamW(fused=True)`` (state), galore-torch's ``GaLoreAdamW`` and
  pytorch-optimizer's ``GaLore`` (GaLore's SVD every ``update_gap`` steps; optional ``compare``
  extra);
- ours: GaLore (SVD), GaLore with the randomized-SVD projector, DCTGaLore, Fira, FRUGAL
  (blockwise, density 0.25), NaturalGaLore.

Every low-rank optimizer refreshes its projector every ``--update-gap`` steps (default 4) so that
refresh steps recur; rounds interleave the optimizers in a shuffled order, one step each. A
step time is the median over steps that do not refresh; the refresh time is the median over
refresh steps minus that (the first step, which allocates the state, is not timed). Ratios are
ratios of those medians against galore-torch's, measured in the same rounds.

State bytes per parameter: every tensor reachable from ``optimizer.state`` (also inside
projector objects), counted by the size of its storage, each storage once: a slice of a full
SVD factor kept alive costs the whole factor. ``shared`` is memory held outside the state and
shared across layers (our DCT basis cache). ``registry`` is ``expected_state_bytes`` for the
same hyperparameters (ours only).

    .venv/bin/python benchmarks/lowrank.py                 # full size (~3 min on 1 thread)
    .venv/bin/python benchmarks/lowrank.py --scale 0.1 --rounds 2   # smoke run
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import optzoo
from optzoo.lowrank import projectors
from optzoo.lowrank.engine import LowRankOptimizer, expected_state_bytes

RANK = 128


def tensor_shapes(scale: float) -> list[tuple[int, ...]]:
    rows = max(1, round(1024 * scale))
    return [(rows, 1024)] * 12 + [(rows, 512)] * 12 + [(1024,)] * 40


@dataclass
class Candidate:
    """One optimizer: how to build it and which (1-based) steps refresh its projector."""

    name: str
    build: Callable[[list[Tensor]], torch.optim.Optimizer]
    refreshes: Callable[[int], bool]
    registry: Callable[[list[Tensor]], float] | None = None
    optimizer: Any = None
    params: list[Tensor] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)
    refresh: list[float] = field(default_factory=list)
    step_count: int = 0


def reachable_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor storage reachable from the optimizer's state, each storage once."""
    seen: set[int] = set()
    total = 0

    def visit(value: Any, depth: int = 0) -> None:
        nonlocal total
        if depth > 4:
            return
        if isinstance(value, Tensor):
            storage = value.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v, depth + 1)
        elif isinstance(value, list | tuple):
            for v in value:
                visit(v, depth + 1)
        elif hasattr(value, "__dict__"):
            visit(vars(value), depth + 1)

    for state in optimizer.state.values():
        visit(state)
    return total


def candidates(gap: int, with_compare: bool) -> list[Candidate]:
    def ours(cls, **kw):
        hp = {"rank": RANK, "update_gap": gap, **kw}
        if cls is optzoo.FRUGAL:
            hp.pop("rank")
        return lambda ps: cls(ps, **hp)

    def registry(**kw):
        return lambda ps: expected_state_bytes(ps, **{"rank": RANK, **kw})

    ours_refresh = lambda k: (k - 1) % gap == 0  # noqa: E731
    found = [
        Candidate(
            "AdamW fused (torch)",
            lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
            lambda k: False,
        ),
    ]
    if with_compare:
        try:
            from galore_torch import GaLoreAdamW

            def galore_torch(ps):
                groups = [
                    {"params": [p for p in ps if p.ndim != 2]},
                    {
                        "params": [p for p in ps if p.ndim == 2],
                        "rank": RANK,
                        "update_proj_gap": gap,
                        "scale": 0.25,
                        "proj_type": "std",
                    },
                ]
                return GaLoreAdamW(groups, lr=1e-2, no_deprecation_warning=True)

            found.append(Candidate("galore-torch GaLoreAdamW", galore_torch, ours_refresh))
        except ImportError:
            pass
        try:
            from pytorch_optimizer import GaLore as PyOptGaLore

            def pytorch_optimizer(ps):
                groups = [
                    {"params": [p for p in ps if p.ndim != 2]},
                    {
                        "params": [p for p in ps if p.ndim == 2],
                        "rank": RANK,
                        "update_proj_gap": gap,
                        "scale": 0.25,
                        "projection_type": "std",
                    },
                ]
                return PyOptGaLore(groups, lr=1e-2)

            # its step counter is 1-based: refreshes at step 1 and at multiples of the gap
            found.append(
                Candidate(
                    "pytorch-optimizer GaLore",
                    pytorch_optimizer,
                    lambda k: k == 1 or k % gap == 0,
                )
            )
        except ImportError:
            pass
    found += [
        Candidate("GaLore (svd)", ours(optzoo.GaLore), ours_refresh, registry()),
        Candidate(
            "GaLore (randomized_svd)",
            lambda ps: LowRankOptimizer(ps, rank=RANK, update_gap=gap, projector="randomized_svd"),
            ours_refresh,
            registry(projector="randomized_svd"),
        ),
        Candidate("DCTGaLore", ours(optzoo.DCTGaLore), ours_refresh, registry(projector="dct")),
        Candidate("Fira", ours(optzoo.Fira), ours_refresh, registry(residual="fira")),
        Candidate(
            "FRUGAL (blockwise 0.25)",
            ours(optzoo.FRUGAL),
            ours_refresh,
            registry(projector="blockwise", density=0.25, residual="sign"),
        ),
        Candidate(
            "NaturalGaLore",
            ours(optzoo.NaturalGaLore),
            ours_refresh,
            registry(preconditioner="natural"),
        ),
    ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3, help="refresh periods timed")
    parser.add_argument("--update-gap", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compare", action="store_true", help="skip third-party optimizers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = tensor_shapes(args.scale)
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=generator) * 1e-3 for s in shapes]
    init = torch.Generator().manual_seed(1)
    values = [torch.randn(s, generator=init) * 0.02 for s in shapes]
    n_params = sum(g.numel() for g in grads)
    print(
        f"{len(shapes)} tensors, {n_params / 1e6:.1f}M parameters, rank {RANK}, "
        f"refresh every {args.update_gap} steps, {args.threads} thread(s)"
    )

    runs = candidates(args.update_gap, not args.no_compare)
    for c in runs:
        c.params = [torch.nn.Parameter(v.clone()) for v in values]
        for p, g in zip(c.params, grads, strict=True):
            p.grad = g.clone()
        c.optimizer = c.build(c.params)
        c.optimizer.step()  # allocates the state (and the first refresh): not timed
        c.step_count = 1
    projectors.dct_basis.cache_clear()
    runs_by_name = {c.name: c for c in runs}
    rounds = args.rounds * args.update_gap
    order = list(runs)
    for _ in range(rounds):
        random.shuffle(order)
        for c in order:
            c.step_count += 1
            start = time.perf_counter()
            c.optimizer.step()
            elapsed = time.perf_counter() - start
            (c.refresh if c.refreshes(c.step_count) else c.steady).append(elapsed)

    dct_cache = sum(
        projectors.dct_basis(n, torch.float32, "cpu").numel() * 4
        for n in sorted({min(s) for s in shapes if len(s) == 2})
    )
    anchor = runs_by_name.get("galore-torch GaLoreAdamW")
    anchor_step = statistics.median(anchor.steady) if anchor else None
    anchor_refresh = (
        statistics.median(anchor.refresh) - anchor_step if anchor and anchor.refresh else None
    )
    header = (
        f"{'optimizer':26} {'state B/param':>13} {'registry':>9} {'shared':>7} "
        f"{'step ms':>8} {'x anchor':>8} {'refresh s':>9} {'x anchor':>8}"
    )
    print(header)
    print("-" * len(header))
    for c in runs:
        state = reachable_bytes(c.optimizer) / n_params
        reg = f"{c.registry(c.params):9.3f}" if c.registry else f"{'':9}"
        shared = dct_cache / n_params if c.name == "DCTGaLore" else 0.0
        step = statistics.median(c.steady)
        refresh = statistics.median(c.refresh) - step if c.refresh else None
        step_ratio = f"{step / anchor_step:8.2f}" if anchor_step else f"{'':8}"
        refresh_text = f"{refresh:9.3f}" if refresh is not None else f"{'-':>9}"
        refresh_ratio = (
            f"{anchor_refresh / refresh:7.1f}x"
            if refresh is not None and anchor_refresh
            else f"{'':8}"
        )
        print(
            f"{c.name:26} {state:13.3f} {reg} {shared:7.3f} {step * 1e3:8.1f} {step_ratio} "
            f"{refresh_text} {refresh_ratio}"
        )
    print(
        "step 'x anchor': this step time / galore-torch's (above 1 is slower); refresh "
        "'x anchor': galore-torch's refresh time / this one (above 1 is faster). "
        f"Medians over {rounds} interleaved rounds; the machine's load moves every figure."
    )


if __name__ == "__main__":
    main()
