"""Low-rank optimizers on the tiny character-level LM (``char_lm``): final validation loss after the
same steps, each optimizer with its learning rate tuned by the same small sweep.

Protocol: the workload's model (2 layers, width 64; 0.11M parameters); ``--steps`` steps
(default 200, half the workload's 400-step budget, to keep the default run near 3 minutes)
with 10% linear warm-up then cosine decay to 0. The
attention and MLP weight matrices are projected (rank 16 = a quarter of the width, GaLore's
60M-model ratio 128/512; FRUGAL density 0.25); embeddings, head, norms and biases take Adam at
full rank in the same optimizer, as in the papers. Refresh every ``--update-gap`` steps (50:
GaLore's 200 would never refresh in a 200-step run). Each optimizer gets the same LR
sweep, its paper's default x (1/3, 1, 3), on seed 0; the best LR is rerun on the fresh seeds
``--seeds`` (default 1; pass more for a spread) and the table shows each seed's final
validation loss (nats/char), their median, and the median difference against AdamW
(negative is better). The papers' ordering (Fira <= GaLore, FRUGAL <= GaLore,
NaturalGaLore <= GaLore) is checked on the medians.

    .venv/bin/python benchmarks/lowrank_lm.py                  # ~3 min of CPU, 1 thread
    .venv/bin/python benchmarks/lowrank_lm.py --steps 400 --seeds 1 2 3   # the full budget
    .venv/bin/python benchmarks/lowrank_lm.py --steps 100 --seeds 1   # smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import optzoo
from optzoo.bench.workloads import get_workload

RANK, DENSITY = 16, 0.25
# name -> (class, paper-default lr used as the centre of the sweep)
OPTIMIZERS = {
    "AdamW": (optzoo.AdamW, 3e-3),
    "GaLore": (optzoo.GaLore, 1e-2),
    "Fira": (optzoo.Fira, 1e-2),
    "FRUGAL": (optzoo.FRUGAL, 1e-3),
    "NaturalGaLore": (optzoo.NaturalGaLore, 1e-2),
    "DCTGaLore": (optzoo.DCTGaLore, 1e-2),
}
SWEEP = (1 / 3, 1.0, 3.0)


def build(name: str, model: torch.nn.Module, lr: float, gap: int) -> torch.optim.Optimizer:
    cls, _ = OPTIMIZERS[name]
    if name == "AdamW":
        return cls(model.parameters(), lr=lr, weight_decay=0.0)
    matrices = [
        p for n, p in model.named_parameters() if p.ndim == 2 and ("attention." in n or "mlp." in n)
    ]
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    groups = [{"params": matrices}, {"params": rest, "project": False}]
    size = {"density": DENSITY} if name == "FRUGAL" else {"rank": RANK}
    return cls(groups, lr=lr, update_gap=gap, **size)


def train(name: str, lr: float, seed: int, steps: int, gap: int) -> float:
    task = get_workload("char_lm").build(seed)
    opt = build(name, task.model, lr, gap)
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        task.loss(task.batch(step)).backward()
        opt.step()
        schedule.step()
    return task.evaluate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--update-gap", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results: dict[str, tuple[float, list[float]]] = {}
    for name, (_, centre) in OPTIMIZERS.items():
        sweep = {centre * f: train(name, centre * f, 0, args.steps, args.update_gap) for f in SWEEP}
        best = min(sweep, key=lambda lr: sweep[lr] if math.isfinite(sweep[lr]) else math.inf)
        finals = [train(name, best, s, args.steps, args.update_gap) for s in args.seeds]
        results[name] = (best, finals)
        tried = ", ".join(f"{lr:.1e}: {loss:.3f}" for lr, loss in sweep.items())
        print(f"  {name}: sweep on seed 0 {{{tried}}}", flush=True)
    anchor = statistics.median(results["AdamW"][1])
    print(f"\nchar_lm, {args.steps} steps, rank {RANK} / density {DENSITY}, final val loss:")
    header = f"{'optimizer':14} {'lr':>8} " + " ".join(f"{'seed ' + str(s):>8}" for s in args.seeds)
    header += f" {'median':>8} {'- AdamW':>8}"
    print(header)
    print("-" * len(header))
    medians = {}
    for name, (lr, finals) in results.items():
        medians[name] = statistics.median(finals)
        cells = " ".join(f"{v:8.4f}" for v in finals)
        print(f"{name:14} {lr:8.1e} {cells} {medians[name]:8.4f} {medians[name] - anchor:+8.4f}")
    print()
    for name in ("Fira", "FRUGAL", "NaturalGaLore"):
        holds = medians[name] <= medians["GaLore"]
        print(
            f"paper ordering {name} <= GaLore: {'holds' if holds else 'DOES NOT hold'} "
            f"({medians[name]:.4f} vs {medians['GaLore']:.4f})"
        )
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
