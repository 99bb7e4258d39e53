"""What one CPU core's memory system costs an optimizer step: reads, not bytes.

Times, with one thread, on 12 float32 tensors of 1024 x 1024 (``--scale`` multiplies rows):

- a sum of squares (read only: 1 read stream a tensor), compiled with 1, 2, 3 or 6 tensors a
  call (inductor fuses a call's loops, so more tensors means more streams in one loop), and
  ``torch.dot`` (BLAS) for comparison;
- an in-place scale ``x *= c`` (1 read, 1 write of the same lines), compiled the same ways;
- ``torch.optim.AdamW(fused=True)`` (4 reads, 3 writes).

For each it prints the time per element and per read stream. On the machine these scripts
were written on, that figure was the same (about 0.3 ns) for all of them: a line written back
after being read costs little, so a step's floor is set by how many tensors it reads, and a
second pass that only reads (a norm for a trust ratio, a non-finite check) costs about as
much as a whole read-modify-write pass over the same tensor.

    .venv/bin/python benchmarks/read_bandwidth.py [--scale 1.0] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _compiled_per_call(fn, tensors, k):
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)

    def run():
        for i in range(0, len(tensors), k):
            compiled(tensors[i : i + k])

    return run


def _sum_of_squares(xs):
    return [x.square().sum() for x in xs]


def _scale(xs):
    for x in xs:
        x.mul_(1.0000001)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.rounds < 1:
        parser.error("--scale must be positive and --rounds at least 1")
    torch.set_num_threads(1)
    rows = max(1, round(1024 * args.scale))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(rows, 1024, generator=g) for _ in range(12)]
    numel = sum(x.numel() for x in xs)
    params = [x.clone().requires_grad_() for x in xs]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    adamw = torch.optim.AdamW(params, fused=True)
    flat = [x.view(-1) for x in xs]

    # name -> (step, read streams a tensor, bytes a parameter)
    cases = {"fused AdamW step": (adamw.step, 4, 28)}
    cases["dot (BLAS)"] = (lambda: [torch.dot(x, x) for x in flat], 1, 4)
    for k in (1, 2, 3, 6):
        cases[f"sum of squares, {k} a loop"] = (_compiled_per_call(_sum_of_squares, xs, k), 1, 4)
    for k in (1, 2, 3, 6):
        cases[f"x *= c, {k} a loop"] = (_compiled_per_call(_scale, xs, k), 1, 8)
    for step, _, _ in cases.values():  # compile and warm up
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (step, _, _) in cases.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    print(f"{numel / 1e6:.1f}M float32 elements, 1 thread, median of {args.rounds} rounds")
    print(f"{'':28s} {'ms':>7s} {'GB/s':>6s} {'ns/elem':>8s} {'ns/elem/read':>13s}")
    for name, (_, reads, nbytes) in cases.items():
        t = statistics.median(times[name])
        per_element = t / numel * 1e9
        print(
            f"{name:28s} {t * 1e3:7.2f} {nbytes * numel / t / 1e9:6.1f} "
            f"{per_element:8.3f} {per_element / reads:13.3f}"
        )


if __name__ == "__main__":
    main()
