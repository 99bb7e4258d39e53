"""Optimizer step time, state memory and compile time against torch's fused AdamW, in one run.

The tensors are those of a ~19M-parameter transformer (12 x 1024x1024, 12 x 1024x512,
40 x 1024; ``--scale`` shrinks the matrices' rows, the tensor count stays), float32 on CPU,
with fixed random gradients. Timed: the anchor ``torch.optim.AdamW(fused=True)`` (it checks
nothing: compare with ``--nonfinite ignore``), and the same with the non-finite check that
``torch.amp.GradScaler`` adds (compare with our default ``skip``, the same contract); every
registered elementwise optzoo algorithm at its defaults, through the compiled fast path
(``--reference`` adds the eager per-tensor reference); and pytorch-optimizer's version of the
same algorithm where it has one (optional ``compare`` extra), configured alike.

How: each optimizer owns its parameters. Its first step is timed alone (for the compiled path
that is the one-time compile, C loops or inductor, with cold caches: fresh directories per run);
after WARMUP_ROUNDS untimed rounds, the optimizers take turns, one step each per round in a
shuffled order, so that machine noise hits all of them alike. A time is the median over the
rounds; a ratio is the median of the per-round ratios. The machine's memory bandwidth
(in-place ``a += b`` over buffers far larger than the cache) is measured in the same rounds,
and each step's roofline fraction is (bytes the step must move / bandwidth) / its time, the
bytes being 4 (read the gradient) + 8 (read and write the parameter) + 2 x the state (read and
write it) per parameter: 28 for AdamW. Rules that also read a tensor-wide norm (LAMB, LARS,
DoG, Prodigy) need a second pass their roofline does not count; a state buffer the step only
reads (DoG's and Prodigy's copy of x0) is counted twice. Last, each compiled algorithm's first
step is timed again after ``torch._dynamo.reset()``: the compile cost with a warm cache.

    .venv/bin/python benchmarks/step_time.py                        # full size, 1 thread
    .venv/bin/python benchmarks/step_time.py --scale 0.05 --steps 5   # smoke run
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

import optzoo
from optzoo.registry import REGISTRY, AlgorithmSpec

WARMUP_ROUNDS = 2
BANDWIDTH_NUMEL = 1 << 26  # 256 MiB per buffer: far larger than any last-level cache here
# What the closure returns for algorithms whose step needs one (NormalizedGD reads the loss);
# the gradients are already filled, so it computes nothing.
FIXED_LOSS = torch.tensor(0.5)

# optzoo name -> pytorch_optimizer class. It gets our hyperparameters wherever its constructor
# has the same name (RENAMED maps ours to theirs) and runs its default path (batched
# torch._foreach_* ops, which it also uses on CPU). What still differs, per algorithm:
PYTORCH_OPTIMIZER = {
    "Lion": "Lion",  # the same rule
    # eps is added to sqrt(v) before the bias correction (the authors' code); the same work.
    "DiffGrad": "DiffGrad",
    # weight decay shrinks x in a separate pass instead of entering the trust-ratio direction;
    # v is not bias-corrected; ||x|| is clamped at 10; three scalars per tensor are kept.
    "LAMB": "Lamb",
    # the 2017 LARS: trust ratio on the gradient before the momentum (written into p.grad),
    # heavy-ball momentum, matrices only (1-D tensors take a plain momentum step).
    "LARS": "LARS",
    # eps is scaled by d_{k+1} instead of d_k; one d shared by all param groups.
    "Prodigy": "Prodigy",
}
# pytorch_optimizer 4.1 has no AdamW or NAdamW of its own (it re-exports torch's), and no
# AdaGrad-Norm, DoG, SGLD or normalized GD.
RENAMED = {"use_bias_correction": "bias_correction"}


@dataclass
class Result:
    """What was measured for one optimizer (seconds; state in bytes per parameter)."""

    algorithm: str
    impl: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    registry_state_bytes: float | None = None
    state_bytes: float | None = None
    first_step_s: float | None = None
    warm_first_step_s: float | None = None
    step_s: list[float] = field(default_factory=list)
    step_cpu_s: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class Candidate:
    """One optimizer under test: how to build it, its live objects and its result."""

    result: Result
    build: Callable[[list[Tensor]], torch.optim.Optimizer]
    closure: Callable[[], Tensor] | None = None
    private_grads: bool = False  # third-party code may write into p.grad
    optimizer: torch.optim.Optimizer | None = None
    params: list[Tensor] = field(default_factory=list)

    def step(self) -> None:
        """One optimizer step."""
        self.optimizer.step(self.closure)


class CheckedAnchor(Candidate):
    """Fused AdamW that skips non-finite steps the way ``torch.amp.GradScaler`` makes it: one
    fused check of the gradients (which also unscales them, here by 1: a read and a write),
    then the fused step, which reads the flag (``found_inf``) and skips on the device. Our
    ``on_nonfinite="skip"`` is the same contract; torch's plain fused AdamW checks nothing."""

    def step(self) -> None:
        """Check, then step."""
        opt = self.optimizer
        if getattr(opt, "found_inf", None) is None:
            opt.found_inf, opt.grad_scale = torch.zeros(()), None
            self.unit = torch.ones(())
        opt.found_inf.zero_()
        grads = [p.grad for p in self.params]
        torch._amp_foreach_non_finite_check_and_unscale_(grads, opt.found_inf, self.unit)
        opt.step()


class BandwidthProbe:
    """In-place ``a += b`` over two large buffers: 12 bytes moved per element per step."""

    def __init__(self) -> None:
        self.result = Result("memory bandwidth", "a += b")
        self.a, self.b = torch.zeros(BANDWIDTH_NUMEL), torch.ones(BANDWIDTH_NUMEL)

    def step(self) -> None:
        """One pass over the buffers."""
        self.a.add_(self.b)

    def bytes_per_s(self) -> float:
        """Bandwidth from the median step time."""
        return 12 * BANDWIDTH_NUMEL / statistics.median(self.result.step_s)


def tensor_shapes(scale: float) -> list[tuple[int, ...]]:
    """12 x 1024x1024, 12 x 1024x512, 40 x 1024, the matrices' rows multiplied by ``scale``."""
    rows = max(1, round(1024 * scale))
    return [(rows, 1024)] * 12 + [(rows, 512)] * 12 + [(1024,)] * 40


def make_params(shapes: list[tuple[int, ...]], grads: list[Tensor]) -> list[Tensor]:
    """Fresh float32 parameters (same values for every optimizer) with ``grads`` attached."""
    generator = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=generator) * 0.02) for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    return params


def state_bytes_per_param(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> float:
    """Bytes of every tensor in ``optimizer.state`` over the number of parameter elements."""
    total = sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, Tensor)
    )
    return total / sum(p.numel() for p in params)


def hyperparameters_for(spec: AlgorithmSpec) -> dict[str, Any]:
    """The defaults; the registry's test hyperparameters only where the defaults alone do not
    build a valid optimizer."""
    try:
        spec.cls([torch.nn.Parameter(torch.zeros(2))])
        return {}
    except Exception:  # e.g. a required argument; if the test ones fail too, the row says so
        return dict(spec.test_hyperparameters)


def optzoo_candidates(spec: AlgorithmSpec, reference: bool, nonfinite: str) -> list[Candidate]:
    """Our implementations of ``spec`` to time: the compiled fast path, and the eager reference
    with ``reference`` (the reference alone where there is no fast path)."""
    hp = hyperparameters_for(spec)
    accepted = inspect.signature(spec.cls).parameters
    if "implementation" not in accepted:
        impls = ["default"]
    else:
        impls = ["compiled", "reference"] if spec.fast_path else ["reference"]
        impls = impls if reference else impls[:1]
    closure = (lambda: FIXED_LOSS) if spec.needs_closure else None
    out = []
    for impl in impls:
        kwargs = dict(hp, on_nonfinite=nonfinite) if "on_nonfinite" in accepted else dict(hp)
        if impl != "default":
            kwargs["implementation"] = impl
        build = functools.partial(spec.cls, **kwargs)
        out.append(Candidate(Result(spec.name, impl, hp), build, closure=closure))
    return out


def pytorch_optimizer_candidate(spec: AlgorithmSpec, module: Any) -> Candidate | None:
    """pytorch_optimizer's version of ``spec`` with our hyperparameters, if it has one."""
    if module is None or not hasattr(module, PYTORCH_OPTIMIZER.get(spec.name, "-")):
        return None
    cls = getattr(module, PYTORCH_OPTIMIZER[spec.name])
    theirs = inspect.signature(cls).parameters
    ours = {**spec.defaults, **hyperparameters_for(spec)}
    kwargs = {RENAMED.get(k, k): v for k, v in ours.items() if RENAMED.get(k, k) in theirs}
    build = functools.partial(cls, **kwargs)
    return Candidate(Result(spec.name, "pytorch_optimizer", kwargs), build, private_grads=True)


def all_candidates(args: argparse.Namespace) -> list[Candidate]:
    """The anchor first, then every selected elementwise algorithm."""
    anchor = Candidate(
        Result("AdamW", "torch fused", {"fused": True}),
        functools.partial(torch.optim.AdamW, fused=True),
    )
    try:
        import pytorch_optimizer as compare
    except ImportError:
        compare = None
        print("pytorch_optimizer is not installed (scripts/setup test,compare): no comparison")
    wanted = {n.strip(): n.strip().lower() for n in args.algorithms.split(",") if n.strip()}
    specs = [s for s in REGISTRY.values() if not wanted or s.name.lower() in wanted.values()]
    unknown = [n for n, low in wanted.items() if low not in {s.name.lower() for s in specs}]
    if unknown:
        print(f"not registered: {', '.join(unknown)} (registered: {', '.join(REGISTRY)})")
    skipped = [s.name for s in specs if not s.elementwise]
    if skipped:
        print(f"not elementwise, not timed here: {', '.join(skipped)}")
    checked = CheckedAnchor(
        Result("AdamW", "torch fused + check", {"fused": True}),
        functools.partial(torch.optim.AdamW, fused=True),
    )
    candidates = [anchor, checked]
    for spec in specs:
        if spec.elementwise:
            candidates += optzoo_candidates(spec, args.reference, args.nonfinite)
            theirs = pytorch_optimizer_candidate(spec, compare)
            candidates += [theirs] if theirs is not None else []
    return candidates


def first_step(candidate: Candidate, shapes: list[tuple[int, ...]], grads: list[Tensor]) -> None:
    """Build the optimizer, time its first step, measure its state; record a failure."""
    if candidate.private_grads:
        grads = [g.clone() for g in grads]
    candidate.params = make_params(shapes, grads)
    result = candidate.result
    try:
        candidate.optimizer = candidate.build(candidate.params)
        start = time.perf_counter()
        candidate.step()
        result.first_step_s = time.perf_counter() - start
        result.state_bytes = state_bytes_per_param(candidate.optimizer, candidate.params)
        if result.impl in ("compiled", "reference", "default"):
            spec = REGISTRY[result.algorithm]
            result.registry_state_bytes = spec.expected_state_bytes(candidate.params)
    except Exception as error:  # report it in the table and go on
        fail(candidate, error)


def fail(candidate: Candidate, error: Exception) -> None:
    """Mark ``candidate`` failed: keep the error, drop its timings and its memory."""
    candidate.result.error = f"{type(error).__name__}: {error}".splitlines()[0]
    candidate.result.step_s.clear()
    candidate.result.step_cpu_s.clear()
    candidate.optimizer, candidate.params = None, []


def run_rounds(runners: list[Any], rounds: int, record: bool, seed: int = 0) -> None:
    """``rounds`` rounds of one step of each runner, in a shuffled order per round."""
    rng = random.Random(seed)
    for _ in range(rounds):
        order = [r for r in runners if not r.result.error]
        rng.shuffle(order)
        for runner in order:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                runner.step()
            except Exception as error:
                fail(runner, error)
                continue
            if record:
                runner.result.step_s.append(time.perf_counter() - wall)
                runner.result.step_cpu_s.append(time.process_time() - cpu)


def warm_first_step(candidate: Candidate) -> None:
    """First step of a new instance after ``torch._dynamo.reset()``: retrace, warm caches."""
    candidate.optimizer = None
    torch._dynamo.reset()
    try:
        candidate.optimizer = candidate.build(candidate.params)
        start = time.perf_counter()
        candidate.step()
        candidate.result.warm_first_step_s = time.perf_counter() - start
    except Exception as error:
        candidate.result.error = f"warm compile: {type(error).__name__}: {error}"
    candidate.optimizer = None


def paired_median(numerator: Result, denominator: Result) -> float | None:
    """Median over rounds of numerator time / denominator time (same rounds)."""
    if not numerator.step_s or not denominator.step_s:
        return None
    return statistics.median(
        a / b for a, b in zip(numerator.step_s, denominator.step_s, strict=True)
    )


def summarize(candidates: list[Candidate], bandwidth: float, numel: int) -> list[dict]:
    """Per candidate: its result plus the derived figures (median, ratios, roofline)."""
    anchor, checked = candidates[0].result, candidates[1].result
    theirs = {
        c.result.algorithm: c.result for c in candidates if c.result.impl == "pytorch_optimizer"
    }
    rows = []
    for c in candidates:
        r = c.result
        row = asdict(r) | {"median_ms": None, "x_fused_adamw": None, "roofline": None}
        row["x_fused_adamw_checked"] = None
        if r.step_s:
            median = statistics.median(r.step_s)
            must_move = numel * (12 + 2 * r.state_bytes)
            row |= {
                "median_ms": median * 1e3,
                "x_fused_adamw": paired_median(r, anchor),
                "x_fused_adamw_checked": paired_median(r, checked),
                "roofline": must_move / bandwidth / median,
            }
        other = theirs.get(r.algorithm)
        if r.impl in ("compiled", "reference", "default") and other is not None:
            row["pytorch_optimizer_ms"] = (
                statistics.median(other.step_s) * 1e3 if other.step_s else None
            )
            row["speedup_over_pytorch_optimizer"] = paired_median(other, r)
            row["pytorch_optimizer_error"] = other.error
        rows.append(row)
    return rows


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or "-" when there is none."""
    return "-" if value is None else format(value, spec)


def table_rows(rows: list[dict]) -> list[list[str]]:
    """One table line per optzoo implementation (and the anchor); pytorch_optimizer's figures
    go in the line of the algorithm they implement."""
    lines = []
    for row in rows:
        if row["impl"] == "pytorch_optimizer":
            continue
        registry = row["registry_state_bytes"]
        state = fmt(row["state_bytes"], ".2f") + ("" if registry is None else f" / {registry:g}")
        compile_s = fmt(row["first_step_s"], ".2f")
        if row["warm_first_step_s"] is not None:
            compile_s += f" / {row['warm_first_step_s']:.2f}"
        note = row["error"] and f"failed: {row['error']}"
        if row.get("pytorch_optimizer_error"):
            note += f"  pytorch_optimizer failed: {row['pytorch_optimizer_error']}"
        if row["hyperparameters"] and row["impl"] in ("compiled", "reference", "default"):
            note += f"  hyperparameters {row['hyperparameters']}"
        lines.append(
            [
                row["algorithm"],
                row["impl"],
                state,
                fmt(row["median_ms"], ".2f"),
                fmt(row["x_fused_adamw"], ".2f"),
                fmt(row["x_fused_adamw_checked"], ".2f"),
                fmt(row["roofline"], ".0%"),
                fmt(row.get("pytorch_optimizer_ms"), ".2f"),
                fmt(row.get("speedup_over_pytorch_optimizer"), ".2f"),
                compile_s,
                note.strip()[:100],
            ]
        )
    return lines


def print_table(header: list[str], lines: list[list[str]]) -> None:
    """A rich table where rich is installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
        for line in [header, ["-" * w for w in widths], *lines]:
            cells = [
                c.ljust(w) if i < 2 or i == len(header) - 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            print("  ".join(cells).rstrip())
        return
    table = Table(*header)
    for line in lines:
        table.add_row(*line)
    Console(width=max(160, Console().width)).print(table)


def main() -> None:
    """Parse the options, measure, print the table (and write the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="", help="comma-separated names (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the tensor set")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reference", action="store_true", help="also time the eager path")
    parser.add_argument(
        "--nonfinite",
        default="skip",
        choices=("skip", "raise", "ignore"),
        help="our on_nonfinite policy (default skip, the library default, costs a gradient read)",
    )
    parser.add_argument("--json", default="", help="write the raw numbers to this file")
    args = parser.parse_args()
    if args.steps < 1 or args.scale <= 0 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1 and --scale > 0")
    if os.environ.pop("OPTZOO_IMPLEMENTATION", None):
        print("ignoring OPTZOO_IMPLEMENTATION: every implementation is named explicitly here")
    cache = tempfile.TemporaryDirectory(prefix="step_time_cache_")
    # cold compile caches for this run: inductor's, and that of optzoo's C loops
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache.name, "inductor")
    os.environ["OPTZOO_CACHE_DIR"] = cache.name
    torch.set_num_threads(args.threads)
    torch.compile(lambda x: x + 1)(torch.ones(4))  # inductor's own start-up, paid by no one

    shapes = tensor_shapes(args.scale)
    numel = sum(torch.Size(s).numel() for s in shapes)
    print(
        f"{numel / 1e6:.2f}M float32 parameters in {len(shapes)} tensors, {args.threads} "
        f"thread(s), torch {torch.__version__}, optzoo {optzoo.__version__}, "
        f"non-finite policy {args.nonfinite!r}"
    )
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=generator) * 1e-3 for s in shapes]
    candidates = all_candidates(args)
    for candidate in candidates:
        first_step(candidate, shapes, grads)
    probe = BandwidthProbe()
    runners = [*candidates, probe]
    run_rounds(runners, WARMUP_ROUNDS, record=False)
    run_rounds(runners, args.steps, record=True, seed=1)
    for candidate in candidates:
        if candidate.result.impl == "compiled" and not candidate.result.error:
            warm_first_step(candidate)
    cache.cleanup()

    bandwidth = probe.bytes_per_s()
    rows = summarize(candidates, bandwidth, numel)
    wall = sum(sum(r.result.step_s) for r in runners)
    cpu = sum(sum(r.result.step_cpu_s) for r in runners)
    print(
        f"memory bandwidth (a += b, {args.threads} thread(s)): {bandwidth / 1e9:.1f} GB/s; "
        f"CPU time / wall time of the timed steps: {cpu / wall:.2f} (on a quiet machine close "
        f"to the thread count; lower: other processes took the cores)"
    )
    header = [
        "algorithm",
        "impl",
        "state B/param meas / reg",
        "median ms",
        "x fused AdamW",
        "x fused AdamW + check",
        "roofline",
        "pytorch_optimizer ms",
        "our speed-up",
        "first step s cold / warm",
        "note",
    ]
    print_table(header, table_rows(rows))
    if args.json:
        config = vars(args) | {"numel": numel, "tensors": len(shapes), "torch": torch.__version__}
        with open(args.json, "w") as f:
            json.dump({"config": config, "bandwidth_bytes_per_s": bandwidth, "rows": rows}, f)
        print(f"raw numbers written to {args.json}")


if __name__ == "__main__":
    main()
