"""How far optzoo's fast path is from hand-written loops of the same rule, on this machine.

The step-time targets of issue 2 are ratios to ``torch.optim.AdamW(fused=True)``. This script
asks what ratio is reachable at all here: it compiles plain C loops of Lion, AdamW, NAdamW and
LARS, written by hand (one ``for`` over the elements of one tensor, two for LARS: its norms,
then its update; hyperparameters in registers, vectorised by the C compiler with ``-O3
-march=native``) and times them, one call per tensor through ``ctypes``, against fused AdamW,
against optzoo's compiled step of the same rule (``on_nonfinite="ignore"``, as fused AdamW
checks nothing): on the CPU the C loops that ``optzoo._core.cloops`` generates from the rule,
and against the same rule through torch.compile (``use_c_loops = False``), on the tensor set
of ``step_time.py``. Before timing, each hand-written loop's first step is checked against
optzoo's eager reference (same parameters, gradients and defaults), so the loops compute the
same rule.

The hand-written loops are a floor for how fast the rule can run on one core: they exist only
in this script, for x86-64 or ARM with a C compiler on the path (``$CC``, ``cc`` or ``gcc``),
and are written per rule by hand.

    .venv/bin/python benchmarks/kernel_floor.py [--scale 1.0] [--steps 30]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

import torch
from step_time import make_params, print_table, tensor_shapes
from torch import Tensor

import optzoo

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* c1 = 1 - b1 and c2 = 1 - b2 come rounded from double, as optzoo and torch compute them
   (1 - 0.999f in float is 1.3e-5 off). */
void lion(float *restrict p, const float *restrict g, float *restrict m, int64_t n,
          float lr, float b1, float c1, float b2, float c2, float wd) {
    const float decay = 1.0f - lr * wd;
    for (int64_t i = 0; i < n; i++) {
        float c = b1 * m[i] + c1 * g[i];
        float sign = (float)(c > 0.0f) - (float)(c < 0.0f);
        p[i] = decay * p[i] - lr * sign;
        m[i] = b2 * m[i] + c2 * g[i];
    }
}

/* AdamW (nesterov = 0) and NAdamW (nesterov = 1, the AlgoPerf numerator). */
void adamw(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
           int64_t n, float lr, float b1, float c1, float b2, float c2, float eps, float wd,
           float inv_bc1, float inv_sqrt_bc2, int nesterov) {
    const float decay = 1.0f - lr * wd;
    if (nesterov) {
        for (int64_t i = 0; i < n; i++) {
            float mi = b1 * m[i] + c1 * g[i];
            float vi = b2 * v[i] + c2 * g[i] * g[i];
            float num = (b1 * mi + c1 * g[i]) * inv_bc1;
            p[i] = decay * p[i] - lr * num / (sqrtf(vi) * inv_sqrt_bc2 + eps);
            m[i] = mi;
            v[i] = vi;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float mi = b1 * m[i] + c1 * g[i];
            float vi = b2 * v[i] + c2 * g[i] * g[i];
            p[i] = decay * p[i] - lr * mi * inv_bc1 / (sqrtf(vi) * inv_sqrt_bc2 + eps);
            m[i] = mi;
            v[i] = vi;
        }
    }
}

/* LARS (optzoo's: m = mu m + (1 - mu)(g + wd p), p -= lr tc ||p|| / ||m|| m), tensor by
   tensor: the norms, then the update straight after, while the tensor is still in cache. The
   sums are kept per lane (16 of them), so the compiler vectorises them without reordering. */
void lars(float *restrict p, const float *restrict g, float *restrict m, int64_t n,
          float lr, float mu, float c, float wd, float tc) {
    float sp[16] = {0}, su[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int k = 0; k < 16; k++) {
            float u = mu * m[i + k] + c * (g[i + k] + wd * p[i + k]);
            sp[k] += p[i + k] * p[i + k];
            su[k] += u * u;
        }
    }
    double pp = 0, uu = 0;
    for (int k = 0; k < 16; k++) {
        pp += sp[k];
        uu += su[k];
    }
    for (; i < n; i++) {
        float u = mu * m[i] + c * (g[i] + wd * p[i]);
        pp += p[i] * p[i];
        uu += u * u;
    }
    float ratio = (pp > 0 && uu > 0) ? tc * (float)(sqrt(pp) / sqrt(uu)) : 1.0f;
    for (i = 0; i < n; i++) {
        float mi = mu * m[i] + c * (g[i] + wd * p[i]);
        m[i] = mi;
        p[i] = p[i] - lr * (mi * ratio);
    }
}
"""
ALGORITHMS = ("Lion", "AdamW", "NAdamW", "LARS")


def build_library(directory: str) -> ctypes.CDLL | None:
    """The C loops compiled into a shared library, or None (with the reason printed)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("no C compiler on the path ($CC, cc, gcc): nothing to compare with")
        return None
    source, library = os.path.join(directory, "loops.c"), os.path.join(directory, "loops.so")
    with open(source, "w") as f:
        f.write(C_SOURCE)
    flags = ["-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC"]
    built = subprocess.run([compiler, *flags, source, "-o", library], capture_output=True)
    if built.returncode != 0:
        print(f"{compiler} failed:\n{built.stderr.decode()}")
        return None
    lib = ctypes.CDLL(library)
    pointers, n, f32 = [ctypes.c_void_p] * 3, ctypes.c_int64, ctypes.c_float
    lib.lion.argtypes = [*pointers, n, *[f32] * 6]
    lib.adamw.argtypes = [*pointers, ctypes.c_void_p, n, *[f32] * 9, ctypes.c_int]
    lib.lars.argtypes = [*pointers, n, *[f32] * 5]
    return lib


class Loop:
    """One rule as the C loop, over a list of float32 parameters with gradients (optzoo's
    defaults; the bias corrections in double, as optzoo computes them)."""

    def __init__(self, lib: ctypes.CDLL, algorithm: str, params: list[Tensor]) -> None:
        self.lib, self.algorithm, self.params = lib, algorithm, params
        self.hp = optzoo.create(algorithm, [torch.zeros(1)]).defaults
        self.m = [torch.zeros_like(p) for p in params]
        adam = algorithm in ("AdamW", "NAdamW")
        self.v = [torch.zeros_like(p) for p in params] if adam else []
        self.t = 0

    def step(self) -> None:
        """One step over every parameter, one C call per tensor."""
        hp, self.t = self.hp, self.t + 1
        if self.algorithm == "LARS":
            lr, mu, wd, tc = hp["lr"], hp["momentum"], hp["weight_decay"], hp["trust_coefficient"]
            for p, m in zip(self.params, self.m, strict=True):
                ptrs = (p.data_ptr(), p.grad.data_ptr(), m.data_ptr())
                self.lib.lars(*ptrs, p.numel(), lr, mu, 1 - mu, wd, tc)
            return
        (b1, b2), lr, wd = hp["betas"], hp["lr"], hp["weight_decay"]
        if self.algorithm == "Lion":
            for p, m in zip(self.params, self.m, strict=True):
                self.lib.lion(
                    p.data_ptr(),
                    p.grad.data_ptr(),
                    m.data_ptr(),
                    p.numel(),
                    lr,
                    b1,
                    1 - b1,
                    b2,
                    1 - b2,
                    wd,
                )
            return
        inv_bc1, inv_sqrt_bc2 = 1 / (1 - b1**self.t), (1 - b2**self.t) ** -0.5
        nesterov = int(self.algorithm == "NAdamW")
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            g = p.grad
            args = (lr, b1, 1 - b1, b2, 1 - b2, hp["eps"], wd, inv_bc1, inv_sqrt_bc2, nesterov)
            self.lib.adamw(p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), p.numel(), *args)


def check(lib: ctypes.CDLL, algorithm: str) -> float:
    """Largest difference from optzoo's reference after two steps on one tensor, in float32
    ulps of the larger of the parameter's old and new magnitude (the two round in different
    orders, so about 1 is expected)."""
    generator = torch.Generator().manual_seed(0)
    start, grad = torch.randn(4096, generator=generator), torch.randn(4096, generator=generator)
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    for p in params:
        p.grad = grad.clone()
    reference = optzoo.create(algorithm, params[:1], implementation="reference")
    loop = Loop(lib, algorithm, params[1:])
    for _ in range(2):
        reference.step()
        loop.step()
    ours, theirs = (p.detach() for p in params)
    ulp = torch.finfo(torch.float32).eps * torch.maximum(ours.abs(), start.abs())
    return float(((ours - theirs).abs() / ulp).max())


class Timed:
    """A named step function and its step times."""

    def __init__(self, name: str, step: Callable[[], None]) -> None:
        self.name, self.step, self.times = name, step, []


def main(argv: list[str] | None = None) -> None:
    """Build, check, time, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the tensor set")
    parser.add_argument("--steps", type=int, default=30, help="timed rounds (default 30)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.scale <= 0:
        parser.error("--steps must be >= 1 and --scale > 0")
    torch.set_num_threads(1)
    workdir = tempfile.TemporaryDirectory(prefix="kernel_floor_")
    lib = build_library(workdir.name)
    if lib is None:
        return
    for algorithm in ALGORITHMS:
        error = check(lib, algorithm)
        print(f"{algorithm}: C loop vs optzoo reference after 2 steps: {error:.1f} ulps at most")
        if error > 4:
            raise SystemExit(f"the C loop of {algorithm} does not compute optzoo's rule")

    shapes = tensor_shapes(args.scale)
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=generator) * 1e-3 for s in shapes]
    anchor = torch.optim.AdamW(make_params(shapes, grads), fused=True)
    runs = [Timed("fused AdamW", anchor.step)]
    for algorithm in ALGORITHMS:
        loop = Loop(lib, algorithm, make_params(shapes, grads))
        runs.append(Timed(f"{algorithm} C loop", loop.step))
        for name, c_loops in (("optzoo", True), ("torch.compile", False)):
            ours = optzoo.create(
                algorithm,
                make_params(shapes, grads),
                implementation="compiled",
                on_nonfinite="ignore",
            )
            ours.use_c_loops = c_loops
            runs.append(Timed(f"{algorithm} {name}", ours.step))
    for run in runs:  # compile, warm up
        run.step()
        run.step()
    rng = random.Random(0)
    for _ in range(args.steps):
        order = list(runs)
        rng.shuffle(order)
        for run in order:
            start = time.perf_counter()
            run.step()
            run.times.append(time.perf_counter() - start)

    numel = sum(torch.Size(s).numel() for s in shapes)
    print(
        f"{numel / 1e6:.2f}M float32 parameters in {len(shapes)} tensors, 1 thread, "
        f"{args.steps} rounds; ratios are medians of per-round ratios"
    )
    by_name = {run.name: run for run in runs}

    def ratio(a: str, b: str) -> str:
        pairs = zip(by_name[a].times, by_name[b].times, strict=True)
        return f"{statistics.median(x / y for x, y in pairs):.2f}"

    lines = [["fused AdamW", f"{statistics.median(runs[0].times) * 1e3:.2f}", "-", "-", "-", "-"]]
    for algorithm in ALGORITHMS:
        names = [f"{algorithm} {kind}" for kind in ("C loop", "optzoo", "torch.compile")]
        lines.append(
            [
                algorithm,
                " / ".join(f"{statistics.median(by_name[n].times) * 1e3:.2f}" for n in names),
                *(ratio(n, "fused AdamW") for n in names),
                ratio(names[1], names[0]),
            ]
        )
    header = [
        "rule",
        "median ms hand C / optzoo / torch.compile",
        "hand C x fused",
        "optzoo x fused",
        "torch.compile x fused",
        "optzoo x hand C",
    ]
    print_table(header, lines)
    workdir.cleanup()


if __name__ == "__main__":
    main()
