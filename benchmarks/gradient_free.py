"""optzoo's gradient-free family against the libraries a user would pick instead, in one run.

Four parts (``--part``, default all):

- ``functions``: Rastrigin and Ackley in 30 and 100 dimensions, every method given the same
  number of loss evaluations (``--evaluations``) from the same uniform random start; reported:
  best value found, evaluations used, wall time. Ours: CBO, PolyStep, EvolutionStrategy (OpenAI
  ES), DeepGA, all evaluating their population in one vectorized call
  (``step_population``). Theirs: cma (CMA-ES with IPOP restarts), cbx (CBXpy's CBO, the CBO
  authors' library), polystep (the PolyStep authors' package, its ask/tell ``PolyStepES``),
  evotorch (SNES, PGPE), nevergrad (NGOpt; capped at ``--nevergrad-seconds`` of wall time, its
  per-candidate ask/tell being Python). The anchor is cma: the last column is each method's
  best value minus cma's (both optima are 0, so a ratio would mean nothing).
- ``cbo``: our CBO against cbx's at identical settings (``CBO_SETTINGS``) on the same functions
  and dimensions, over ``--seeds`` seeds (default 5): median, min and max best value, ours / cbx
  of the medians, and a Mann-Whitney p-value; ``--scale full --seeds 20`` takes ~2 minutes.
- ``digits``: an MLP 64-32-10 on scikit-learn's digits (cross-entropy on minibatches of 256);
  test accuracy after each of ``--seconds`` of wall time. Ours (ES, CBO, DeepGA, ZO-Adam) and
  evotorch's SNES and PGPE evaluate populations with ``torch.func.vmap``; Adam with backprop
  is the gradient anchor.
- ``nondiff``: the benchmark's non-differentiable workload (sign hidden units, staircase
  logits; ``nondiff_digits``), gradient-free methods only, ``--nondiff-seconds`` each; the
  paper's claim under test is that PolyStep leads the other gradient-free methods there. Then
  the same network at equal loss evaluations (``--nondiff-evaluations``, ``--nondiff-seeds``
  paired seeds): PolyStep full space and in its subspace mode (displacement and random
  rotation), ZO-Adam (the anchor), ES, and the polystep package's subspace modes.

Hyperparameters are written below (``OURS``, ``THEIRS``); each was set by hand with a few
trials on Rastrigin-30 / digits, the same effort for ours and theirs. Single thread.

    .venv/bin/python benchmarks/gradient_free.py                 # quick: 30-D, 20k evals, 2/5 s
    .venv/bin/python benchmarks/gradient_free.py --scale full    # 30/100-D, 100k, 10/30/60 s
    .venv/bin/python benchmarks/gradient_free.py --part functions --dims 30
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional

import optzoo
from optzoo.bench.workloads.digits import load_digits_split
from optzoo.bench.workloads.nondiff import centered_digits, sign_network

# -- test functions ---------------------------------------------------------------------------


def rastrigin(x: Tensor) -> Tensor:
    return 10 * x.shape[-1] + (x.square() - 10 * torch.cos(2 * math.pi * x)).sum(-1)


def ackley(x: Tensor) -> Tensor:
    d = x.shape[-1]
    a = -20 * torch.exp(-0.2 * torch.sqrt(x.square().sum(-1) / d))
    return a - torch.exp(torch.cos(2 * math.pi * x).sum(-1) / d) + 20 + math.e


FUNCTIONS = {"rastrigin": (rastrigin, 5.12), "ackley": (ackley, 32.768)}


class Budget:
    """Counts evaluations of a batched function and remembers the best value."""

    def __init__(self, fn: Callable[[Tensor], Tensor], limit: int) -> None:
        self.fn, self.limit, self.used, self.best = fn, limit, 0, math.inf

    def __call__(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, x.shape[-1])
        values = self.fn(x)
        self.used += len(x)
        self.best = min(self.best, float(values.min()))
        return values

    @property
    def left(self) -> int:
        return self.limit - self.used


def run_ours(name: str, hp: dict, budget: Budget, start: Tensor, box: float) -> None:
    point = nn.Parameter(start.clone())
    opt = optzoo.create(name, [point], **hp(box) if callable(hp) else hp)
    while budget.left > 0:
        if opt.step_population(lambda params, c: budget(c[0])) is None and opt.exhausted:
            break


# ours: the optzoo name and its hyperparameters as a function of the box half-width
OURS: dict[str, Callable[[float], dict]] = {
    "PolyStep": lambda box: dict(lr=0.02 * box, particle_dim=2),
    "EvolutionStrategy": lambda box: dict(
        lr=0.05 * box, perturbation_scale=0.1 * box, num_directions=50, weight_decay=0.0
    ),
    "DeepGA": lambda box: dict(lr=0.05 * box, population_size=200, truncation=10),
}  # fmt: skip


def run_cma(budget: Budget, start: Tensor, box: float) -> None:
    import cma

    def population(xs: list[np.ndarray]) -> list[float]:  # one vectorized call per generation
        return budget(torch.from_numpy(np.stack(xs))).tolist()

    cma.fmin(
        None, start.numpy(), box / 2, restarts=9, incpopsize=2, parallel_objective=population,
        options={"maxfevals": budget.limit, "verbose": -9, "bounds": [-box, box]},
    )  # fmt: skip


# -- CBO: ours and cbx (CBXpy, the CBO authors' library) with the same settings --------------
# Both run the same Euler-Maruyama step (drift -lambda dt (x - v), noise sigma sqrt(dt) times
# |x - v| xi (isotropic) or (x - v) * xi (anisotropic), v the log-sum-exp softmin consensus of all
# particles, lambda 1, no batching, constant alpha), for budget // particles steps of `particles`
# evaluations each, from `start` + box/2 x standard normal particles. The settings are per function,
# picked by a sweep of ours on 3 seeds at 100k evaluations (Ackley: sigma^2 d = 1.2 < 2 lambda, so
# the isotropic swarm contracts slowly in any dimension), then run unchanged on cbx.
CBO_SETTINGS: dict[str, Callable[[int], dict]] = {
    # CBXpy's sigma 5.1 in 30-D; in 100-D it spreads the swarm, sigma 3 with dt 0.05 does better
    "rastrigin": lambda d: dict(
        particles=100,
        dt=0.02 if d <= 30 else 0.05,
        alpha=100.0,
        sigma=5.1 if d <= 30 else 3.0,
        noise="anisotropic",
    ),
    "ackley": lambda d: dict(
        particles=300, dt=0.2, alpha=30.0, sigma=math.sqrt(1.2 / d), noise="isotropic"
    ),
}


def cbo_runners(
    fname: str, d: int, seed: int
) -> dict[str, Callable[[Budget, Tensor, float], None]]:
    """Ours and cbx's CBO with the settings of ``CBO_SETTINGS[fname]`` and the same seed."""
    s = CBO_SETTINGS[fname](d)
    n = s["particles"]

    def ours(budget: Budget, start: Tensor, box: float) -> None:
        point = nn.Parameter(start.clone())
        opt = optzoo.CBO(
            [point], lr=s["dt"], alpha=s["alpha"], drift=1.0, sigma=s["sigma"],
            population_size=n, noise=s["noise"], init_std=box / 2, seed=seed,
        )  # fmt: skip
        for _ in range(budget.limit // n):
            opt.step_population(lambda params, c: budget(c[0]))

    def cbx(budget: Budget, start: Tensor, box: float) -> None:
        from cbx.dynamics import CBO

        rng = np.random.default_rng([seed, 1])  # not the stream cbx's noise is drawn from
        x = start.numpy()[None, None] + box / 2 * rng.standard_normal((1, n, start.numel()))

        def f(z: np.ndarray) -> np.ndarray:  # (M, N, d) -> (M, N)
            values = budget(torch.from_numpy(z.reshape(-1, z.shape[-1])))
            return values.numpy().reshape(z.shape[:-1])

        # check_f_dims=False: cbx's shape check evaluates f at N standard normal points, which
        # the budget would count (N evaluations more than ours) and which lie next to Ackley's
        # minimizer (best value ~4.2 at 30-D before the first step).
        dyn = CBO(
            f, f_dim="3D", x=x, N=n, d=start.numel(), max_it=budget.limit // n, dt=s["dt"],
            alpha=s["alpha"], sigma=s["sigma"], lamda=1.0, noise=s["noise"], verbosity=0,
            seed=seed, check_f_dims=False, track_args={"names": []},
        )  # fmt: skip
        dyn.optimize(sched=None)  # cbx's default schedule multiplies alpha by 1.05 a step

    return {"optzoo CBO": ours, "cbx CBO": cbx}


def cbo_part(args: argparse.Namespace) -> None:
    """Ours against cbx over ``--seeds`` seeds: per seed a fresh uniform start in the box, the
    same for both; medians, min and max of the best value, ours / cbx of the medians, and the
    two-sided Mann-Whitney p-value of "same distribution of best values"."""
    from scipy.stats import mannwhitneyu

    print(
        f"\n== CBO vs cbx: best value after {args.evaluations} evaluations, "
        f"{args.seeds} seeds (median [min, max]) =="
    )
    print(f"{'function':<14}{'method':<14}{'median':>9}{'min':>9}{'max':>9}{'evals':>9}"
          f"{'wall s':>8}{'vs cbx':>8}{'p':>7}")  # fmt: skip
    for fname in args.functions:
        fn, box = FUNCTIONS[fname]
        for d in args.dims:
            rows: dict[str, tuple[list[float], list[int], list[float]]] = {}
            for seed in range(args.seeds):
                g = torch.Generator().manual_seed(1000 * seed + d)
                start = box * (2 * torch.rand(d, generator=g, dtype=torch.float64) - 1)
                for label, runner in cbo_runners(fname, d, seed).items():
                    budget = Budget(fn, args.evaluations)
                    began = time.perf_counter()
                    runner(budget, start, box)
                    best, used, wall = rows.setdefault(label, ([], [], []))
                    best.append(budget.best)
                    used.append(budget.used)
                    wall.append(time.perf_counter() - began)
            anchor = float(np.median(rows["cbx CBO"][0]))
            p = mannwhitneyu(rows["optzoo CBO"][0], rows["cbx CBO"][0]).pvalue
            for label, (best, used, wall) in rows.items():
                median = float(np.median(best))
                same = f"{p:>7.2f}" if label == "optzoo CBO" else ""
                print(
                    f"{f'{fname}-{d}':<14}{label:<14}{median:>9.3f}{min(best):>9.3f}"
                    f"{max(best):>9.3f}{max(used):>9}{float(np.median(wall)):>8.2f}"
                    f"{median / anchor:>8.2f}{same}"
                )


def run_polystep(budget: Budget, start: Tensor, box: float) -> None:
    from polystep import PolyStepES

    es = PolyStepES(
        start.numel(), num_particles=4, step_radius=0.05 * box, x0=start, seed=0,
        dtype=torch.float64,
    )  # fmt: skip
    while budget.left >= es.popsize:
        candidates = es.ask()
        es.tell(budget(candidates))


def run_evotorch(algorithm: str) -> Callable[[Budget, Tensor, float], None]:
    """evotorch's SNES or PGPE (adaptive sigma), or ``"PGPE-fixed"``: PGPE set up as our
    EvolutionStrategy is (``OURS``: antithetic pairs, centred ranks, Adam on the centre, sigma
    fixed at 0.1 box, centre learning rate 0.05 box, 100 per generation), the like-for-like
    check of our ES against evotorch at equal evaluations."""

    def run(budget: Budget, start: Tensor, box: float) -> None:
        from evotorch import Problem
        from evotorch.algorithms import PGPE, SNES

        problem = Problem(
            "min", lambda x: budget(x), solution_length=start.numel(),
            initial_bounds=(-box, box), vectorized=True, dtype=torch.float64,
        )  # fmt: skip
        if algorithm == "SNES":
            searcher = SNES(problem, stdev_init=box / 2, center_init=start)
        elif algorithm == "PGPE-fixed":
            searcher = PGPE(
                problem, popsize=100, center_learning_rate=0.05 * box, stdev_learning_rate=0.0,
                stdev_init=0.1 * box, center_init=start, optimizer="adam",
            )  # fmt: skip
        else:
            searcher = PGPE(
                problem, popsize=100, center_learning_rate=0.05 * box, stdev_learning_rate=0.1,
                stdev_init=box / 2, center_init=start, optimizer="adam",
            )  # fmt: skip
        while budget.left > 0:
            searcher.step()

    return run


def run_nevergrad(seconds: float) -> Callable[[Budget, Tensor, float], None]:
    def run(budget: Budget, start: Tensor, box: float) -> None:
        import nevergrad as ng

        parametrization = ng.p.Array(init=start.numpy()).set_bounds(-box, box)
        opt = ng.optimizers.NGOpt(parametrization=parametrization, budget=budget.limit)
        began = time.perf_counter()
        while budget.left > 0 and time.perf_counter() - began < seconds:
            candidate = opt.ask()
            value = budget(torch.from_numpy(np.asarray(candidate.value))[None])[0]
            opt.tell(candidate, float(value))

    return run


def functions_part(args: argparse.Namespace) -> None:
    theirs = {
        "cma (IPOP)": run_cma,
        "polystep PolyStepES": run_polystep,
        "evotorch SNES": run_evotorch("SNES"),
        "evotorch PGPE": run_evotorch("PGPE"),
        "evotorch PGPE fixed sigma": run_evotorch("PGPE-fixed"),
        "nevergrad NGOpt": run_nevergrad(args.nevergrad_seconds),
    }
    print(f"\n== test functions: best value after {args.evaluations} evaluations ==")
    print(f"{'function':<14}{'method':<26}{'best':>11}{'evals':>9}{'wall s':>8}{'minus cma':>11}")
    for fname in args.functions:
        fn, box = FUNCTIONS[fname]
        for d in args.dims:
            g = torch.Generator().manual_seed(d)
            start = box * (2 * torch.rand(d, generator=g, dtype=torch.float64) - 1)
            results = []
            cbo = cbo_runners(fname, d, seed=0)
            methods = [("optzoo CBO", cbo["optzoo CBO"]), *[(f"optzoo {n}", n) for n in OURS],
                       ("cbx CBO", cbo["cbx CBO"]), *theirs.items()]  # fmt: skip
            for label, runner in methods:
                budget = Budget(fn, args.evaluations)
                began = time.perf_counter()
                try:
                    torch.manual_seed(0)
                    if isinstance(runner, str):
                        run_ours(runner, OURS[runner], budget, start, box)
                    else:
                        runner(budget, start, box)
                except Exception as error:  # a library's failure is reported, not fatal
                    print(f"  {label}: failed ({type(error).__name__}: {error})")
                    continue
                results.append((label, budget.best, budget.used, time.perf_counter() - began))
            anchor = next((r for r in results if r[0].startswith("cma")), None)
            for label, best, used, wall in results:
                versus = f"{best - anchor[1]:+.3g}" if anchor else "-"
                print(
                    f"{fname}-{d:<5}{'':<3}{label:<26}{best:>11.3f}{used:>9}{wall:>8.1f}{versus:>11}"
                )


# -- neural networks ------------------------------------------------------------------------


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def train_for(
    label: str, model: nn.Module, make_step: Callable, data, checkpoints: list[float]
) -> list[str]:
    """Run ``step(batch)`` until the last checkpoint; test accuracy at each checkpoint."""
    x_train, y_train, x_test, y_test = data
    step = make_step(model)
    g = torch.Generator().manual_seed(0)
    out, began, k = [], time.perf_counter(), 0
    pending = list(checkpoints)
    while pending:
        if k % (len(x_train) // 256) == 0:
            order = torch.randperm(len(x_train), generator=g)
        index = order[(k % (len(x_train) // 256)) * 256 :][:256]
        step(x_train[index], y_train[index])
        k += 1
        if time.perf_counter() - began >= pending[0]:
            out.append(f"{100 * accuracy(model, x_test, y_test):5.1f}%")
            pending.pop(0)
    return out


def population_step(name: str, hp: dict) -> Callable:
    def make(model: nn.Module) -> Callable:
        opt = optzoo.create(name, model.parameters(), **hp)

        def step(x: Tensor, y: Tensor) -> None:
            def loss_of(values):
                return functional.cross_entropy(functional_call(model, values, (x,)), y)

            opt.step_population(optzoo.vectorized_loss(model, loss_of, chunk_size=1024))

        return step

    return make


def adam_step(model: nn.Module) -> Callable:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad()
        functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def evotorch_step(algorithm: str, hp: dict) -> Callable:
    def make(model: nn.Module) -> Callable:
        from evotorch import Problem
        from evotorch.algorithms import PGPE, SNES

        names = [n for n, _ in model.named_parameters()]
        shapes = [p.shape for _, p in model.named_parameters()]
        sizes = [s.numel() for s in shapes]
        batch: dict[str, Tensor] = {}

        def unflatten(v: Tensor) -> dict[str, Tensor]:
            return {n: t.reshape(s) for n, t, s in zip(names, v.split(sizes), shapes, strict=True)}

        def one(v: Tensor) -> Tensor:
            return functional.cross_entropy(
                functional_call(model, unflatten(v), (batch["x"],)), batch["y"]
            )

        def fitness(population: Tensor) -> Tensor:
            return torch.func.vmap(one, chunk_size=1024)(population)

        center = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        problem = Problem("min", fitness, solution_length=center.numel(), vectorized=True,
                          initial_bounds=(-0.1, 0.1))  # fmt: skip
        cls = SNES if algorithm == "SNES" else PGPE
        searcher = cls(problem, center_init=center, **hp)

        def step(x: Tensor, y: Tensor) -> None:
            batch.update(x=x, y=y)
            searcher.step()
            with torch.no_grad():
                for p, v in zip(model.parameters(), unflatten(searcher.status["center"]).values(),
                                strict=True):  # fmt: skip
                    p.copy_(v)

        return step

    return make


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def network_part(title: str, factory, split, methods: dict, checkpoints: list[float]) -> None:
    data = (split.x_train, split.y_train, split.x_test, split.y_test)
    print(f"\n== {title}: test accuracy after {', '.join(f'{c:g}s' for c in checkpoints)} ==")
    for label, make_step in methods.items():
        torch.manual_seed(0)
        model = factory()
        try:
            row = train_for(label, model, make_step, data, checkpoints)
        except Exception as error:
            row = [f"failed ({type(error).__name__}: {error})"]
        print(f"{label:<28}" + "".join(f"{r:>9}" for r in row))


NETWORK_OURS = {
    "optzoo EvolutionStrategy": ("EvolutionStrategy", dict(lr=0.02, perturbation_scale=0.02,
                                                           num_directions=100)),
    "optzoo CBO": ("CBO", dict(lr=0.1, alpha=1e4, sigma=1.0, population_size=100,
                               noise="anisotropic", init_std=0.3)),
    "optzoo DeepGA": ("DeepGA", dict(lr=0.02, population_size=200, truncation=10)),
    "optzoo ZerothOrder (Adam)": ("ZerothOrder", dict(lr=0.01, perturbation_scale=1e-2,
                                                      num_directions=100, inner="Adam")),
}  # fmt: skip
THEIRS = {
    "evotorch SNES": ("SNES", dict(stdev_init=0.02, popsize=200)),
    "evotorch PGPE": ("PGPE", dict(popsize=200, center_learning_rate=0.02,
                                   stdev_learning_rate=0.1, stdev_init=0.02, optimizer="adam")),
}  # fmt: skip


# -- sign network at equal evaluations ------------------------------------------------------

NONDIFF_BY_EVALUATIONS = {
    "optzoo PolyStep full space": ("PolyStep", dict(lr=0.1)),
    "optzoo PolyStep subspace 240": ("PolyStep", dict(lr=0.1, subspace_dim=240)),
    "optzoo PolyStep subspace random": ("PolyStep", dict(lr=0.1, subspace_dim=240,
                                                         subspace_rotation="random")),
    "optzoo ZerothOrder (Adam)": NETWORK_OURS["optzoo ZerothOrder (Adam)"],
    "optzoo EvolutionStrategy": NETWORK_OURS["optzoo EvolutionStrategy"],
}  # fmt: skip
ANCHOR = "optzoo ZerothOrder (Adam)"


def counted_ours(name: str, hp: dict) -> Callable:
    """``make(model, seed) -> (step(x, y), evaluations())`` for an optzoo optimizer."""

    def make(model: nn.Module, seed: int):
        opt = optzoo.create(name, model.parameters(), seed=seed, **hp)

        def step(x: Tensor, y: Tensor) -> None:
            def loss_of(values):
                return functional.cross_entropy(functional_call(model, values, (x,)), y)

            opt.step_population(optzoo.vectorized_loss(model, loss_of, chunk_size=1024))

        return step, lambda: opt.evaluations

    return make


def counted_polystep(kind: str) -> Callable:
    """The authors' package in its subspace modes on the network: ``adaptive`` (one global
    random orthonormal projection, 5% of the parameters clamped to [64, 4096], the mode ours
    implements) and ``hybrid`` (per-layer rank-4 projections capped at 128 coordinates, its
    README's network quickstart); softmax plan, other settings its defaults."""

    def make(model: nn.Module, seed: int):
        from polystep import AdaptiveSubspace, HybridSubspace, ParamLayout, PolyStepOptimizer

        if kind == "adaptive":
            subspace = AdaptiveSubspace.auto_from_params(model)
        else:
            layout = ParamLayout.from_module(model)
            subspace = HybridSubspace.from_layout(layout, rank=4, max_subspace_dim=128)
        opt = PolyStepOptimizer(model, subspace=subspace, solver="softmax", seed=seed)

        def step(x: Tensor, y: Tensor) -> None:
            opt.step_batch(x, y, loss_fn=functional.cross_entropy)

        return step, lambda: opt.candidate_evals

    return make


def nondiff_evaluations_part(budgets: list[int], seeds: int) -> None:
    """Test accuracy of the sign network (``nondiff_digits``: model, minibatches of 256 and
    test split from ``build(seed)``) after at most each budget of loss evaluations (one
    evaluation: one candidate's loss on one minibatch); seeds paired across methods."""
    from optzoo.bench.workloads.nondiff import build

    methods = {label: counted_ours(*spec) for label, spec in NONDIFF_BY_EVALUATIONS.items()}
    methods["polystep AdaptiveSubspace"] = counted_polystep("adaptive")
    methods["polystep HybridSubspace"] = counted_polystep("hybrid")
    results: dict[str, list[list[float]]] = {}  # label -> [budget][seed] accuracy
    for label, make in methods.items():
        results[label] = [[] for _ in budgets]
        for seed in range(seeds):
            task = build(seed)
            step, used = make(task.model, seed)
            accuracy, k, began = 1.0 - task.evaluate(), 0, time.process_time()
            for b, budget in enumerate(budgets):
                while True:  # the accuracy of the last iterate within the budget
                    step(*task.batch(k))
                    k += 1
                    if used() > budget:
                        break
                    accuracy = 1.0 - task.evaluate()
                results[label][b].append(accuracy)
                # the overshooting step counts towards the next budget
                if b + 1 < len(budgets) and used() <= budgets[b + 1]:
                    accuracy = 1.0 - task.evaluate()
            print(f"  {label} seed {seed}: {time.process_time() - began:.0f} s CPU", flush=True)
    anchor = [float(np.median(r)) for r in results[ANCHOR]]
    head = "".join(f"{f'{b // 1000}k evals: seeds':>{9 * seeds + 2}}{'median':>8}{'-anchor':>9}"
                   for b in budgets)  # fmt: skip
    print(f"\n== sign network: test accuracy (%) at equal loss evaluations; anchor {ANCHOR} ==")
    print(f"{'':<34}{head}")
    for label, rows in results.items():
        cells = ""
        for b, row in enumerate(rows):
            median = float(np.median(row))
            cells += "".join(f"{100 * a:9.1f}" for a in row) + "  "
            cells += f"{100 * median:8.1f}{100 * (median - anchor[b]):+9.1f}"
        print(f"{label:<34}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="functions,cbo,digits,nondiff")
    parser.add_argument("--scale", choices=("quick", "full"), default="quick")
    parser.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")], default=None)
    parser.add_argument("--functions", type=lambda s: s.split(","), default=list(FUNCTIONS))
    parser.add_argument("--evaluations", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the cbo part")
    parser.add_argument("--seconds", type=lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--nondiff-seconds", type=float, default=None)
    parser.add_argument("--nondiff-evaluations", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--nondiff-seeds", type=int, default=2)
    parser.add_argument("--nevergrad-seconds", type=float, default=None)
    args = parser.parse_args()
    quick = args.scale == "quick"
    args.dims = args.dims or ([30] if quick else [30, 100])
    args.evaluations = args.evaluations or (20_000 if quick else 100_000)
    args.seconds = args.seconds or ([2.0, 5.0] if quick else [10.0, 30.0, 60.0])
    args.nondiff_seconds = args.nondiff_seconds or (5.0 if quick else 60.0)
    args.nondiff_evaluations = args.nondiff_evaluations or (
        [10_000, 20_000] if quick else [50_000, 150_000, 300_000]
    )
    args.nevergrad_seconds = args.nevergrad_seconds or (3.0 if quick else 60.0)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with contextlib.suppress(ImportError):
        import evotorch  # noqa: F401  (sets up its logger; quieten it after)
    for name in ("evotorch", "evotorch.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    parts = args.part.split(",")
    print(f"scale {args.scale}; 1 thread; wall times on this machine, in this run")
    if "functions" in parts:
        functions_part(args)
    if "cbo" in parts:
        cbo_part(args)
    if "digits" in parts:
        methods = {label: population_step(*spec) for label, spec in NETWORK_OURS.items()}
        methods.update({label: evotorch_step(*spec) for label, spec in THEIRS.items()})
        methods["Adam (backprop, anchor)"] = adam_step
        network_part("MLP 64-32-10 on digits", mlp, load_digits_split(), methods, args.seconds)
    if "nondiff" in parts:
        methods = {
            "optzoo PolyStep": population_step("PolyStep", dict(lr=0.1)),
            **{label: population_step(*spec) for label, spec in NETWORK_OURS.items()},
            "evotorch SNES": evotorch_step(*THEIRS["evotorch SNES"]),
        }
        network_part(
            "sign network (nondiff_digits model)", sign_network, centered_digits(), methods,
            [args.nondiff_seconds],
        )  # fmt: skip
        nondiff_evaluations_part(args.nondiff_evaluations, args.nondiff_seeds)


if __name__ == "__main__":
    main()
