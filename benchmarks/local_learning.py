"""Paper claims of the local-learning trainers and straight-through estimators, checked.

Each row: a method and its anchor trained in the same run on the same data (median held-out
accuracy over the seeds, and the difference in points):

- tpSGD vs backprop (same MLP, same epochs, SGD with the same lr): the paper claims tpSGD is
  within 5 points of backprop on shallow networks;
- NoProp-DT vs backprop (the workload's MLP trained end to end with AdamW);
- GBNN (boosting of the last hidden layer) vs plain training of the same network (AdamW);
- straight-through / surrogate estimators on ``nondiff_digits`` (sign hidden units, staircase
  logits), scored by the workload's exact network, vs plain autograd (zero gradient).

Run alone on a quiet machine: ``python benchmarks/local_learning.py`` (about 3 minutes with
the defaults; ``--seeds 3 --scale 2`` for a longer, firmer run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from optzoo import GradientBoostingTrainer, NoProp, NoPropNetwork, TargetProjectionSGD
from optzoo import straight_through as st
from optzoo.bench.workloads.digits import load_digits_split
from optzoo.bench.workloads.mnist1d import generate_mnist1d
from optzoo.bench.workloads.nondiff import STAIR, centered_digits, sign_network


def datasets() -> dict[str, tuple]:
    digits = load_digits_split()
    mnist1d = generate_mnist1d()
    return {
        "digits": (
            digits.x_train.flatten(1),
            digits.y_train,
            digits.x_test.flatten(1),
            digits.y_test,
        ),
        "mnist1d": (mnist1d.x_train, mnist1d.y_train, mnist1d.x_test, mnist1d.y_test),
    }


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def backprop(model, data, epochs, optimizer, batch_size, seed) -> float:
    x, y, xt, yt = data
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=g).split(batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return accuracy(model, xt, yt)


def mlp(d: int, hidden: tuple[int, ...], k: int = 10, act=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d, h), act()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, k))


def seeded(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)
    return factory()


def compare(name, data_name, method, anchor, seeds) -> dict:
    ours, base, seconds = [], [], []
    for seed in seeds:
        start = time.process_time()
        ours.append(method(seed))
        seconds.append(time.process_time() - start)
        base.append(anchor(seed))
    row = {
        "check": name,
        "data": data_name,
        "method": statistics.median(ours),
        "anchor": statistics.median(base),
        "cpu_s": statistics.median(seconds),
    }
    row["diff_points"] = 100 * (row["method"] - row["anchor"])
    return row


def run(seeds: list[int], scale: float) -> list[dict]:
    data = datasets()
    rows = []
    for name, d in data.items():
        width = d[0].shape[1]
        epochs = max(1, round((10 if name == "digits" else 20) * scale))
        hidden = (128,) if name == "digits" else (100, 100)

        def tp(seed, d=d, width=width, hidden=hidden, epochs=epochs):
            model = seeded(seed, lambda: mlp(width, hidden))
            trainer = TargetProjectionSGD(lr=0.05, momentum=0.9, epochs=epochs, seed=seed)
            trainer.fit(model, (d[0], d[1]))
            return accuracy(model, d[2], d[3])

        def bp_sgd(seed, d=d, width=width, hidden=hidden, epochs=epochs):
            model = seeded(seed, lambda: mlp(width, hidden))
            sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            return backprop(model, d, epochs, sgd, 32, seed)

        rows.append(compare("tpSGD vs backprop SGD", name, tp, bp_sgd, seeds))

        np_epochs = max(1, round((15 if name == "digits" else 8) * scale))

        def noprop(seed, d=d, width=width, np_epochs=np_epochs):
            model = seeded(seed, lambda: NoPropNetwork(width, 10, num_blocks=10, hidden=128))
            trainer = NoProp(lr=3e-3, epochs=np_epochs, batch_size=64, seed=seed)
            trainer.fit(model, (d[0], d[1]))
            return trainer.evaluate(model, (d[2], d[3]))

        def bp_adamw(seed, d=d, width=width, hidden=hidden, epochs=np_epochs):
            model = seeded(seed, lambda: mlp(width, hidden))
            adamw = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
            return backprop(model, d, 2 * epochs, adamw, 64, seed)

        rows.append(compare("NoProp-DT vs backprop AdamW", name, noprop, bp_adamw, seeds))

        def boost(seed, d=d, width=width):
            model = seeded(seed, lambda: mlp(width, (64,), act=nn.Sigmoid))
            GradientBoostingTrainer(units_per_step=8, max_iter=50, seed=seed).fit(
                model, (d[0], d[1])
            )
            return accuracy(model, d[2], d[3])

        def plain(seed, d=d, width=width):
            model = seeded(seed, lambda: mlp(width, (64,), act=nn.Sigmoid))
            adamw = torch.optim.AdamW(model.parameters(), lr=1e-2)
            return backprop(model, d, max(1, round(20 * scale)), adamw, 64, seed)

        rows.append(compare("GBNN vs plain AdamW (same net)", name, boost, plain, seeds))

    split = centered_digits()
    nd = (split.x_train.flatten(1), split.y_train, split.x_test.flatten(1), split.y_test)
    steps = max(1, round(300 * scale))

    def ste_run(sign_estimator: str | None, stair_estimator: str, beta: float = 1.0):
        def train(seed):
            model = seeded(seed, sign_network)
            if sign_estimator is not None:
                model[2] = st.Sign(sign_estimator, beta)
                model[4] = st.Staircase(STAIR, stair_estimator, beta)
            adam = torch.optim.Adam(model.parameters(), lr=0.01)
            g = torch.Generator().manual_seed(seed)
            for _ in range(steps):
                batch = torch.randint(len(nd[0]), (256,), generator=g)
                adam.zero_grad()
                nn.functional.cross_entropy(model(nd[0][batch]), nd[1][batch]).backward()
                adam.step()
            exact = sign_network()  # score with the workload's own network
            exact.load_state_dict(model.state_dict())
            return accuracy(exact, nd[2], nd[3])

        return train

    baseline = ste_run(None, "identity")
    for sign_est, stair_est, beta in [
        ("identity", "identity", 1.0),
        ("saturated", "identity", 1.0),
        ("sigmoid", "sigmoid", 4.0),
        ("fast_sigmoid", "fast_sigmoid", 4.0),
    ]:
        rows.append(
            compare(
                f"STE {sign_est}/{stair_est} vs autograd",
                "nondiff_digits",
                ste_run(sign_est, stair_est, beta),
                baseline,
                seeds,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every budget")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(list(range(args.seeds)), args.scale)
    print(f"{'check':42} {'data':15} {'method':>7} {'anchor':>7} {'diff pts':>8} {'cpu s':>6}")
    for r in rows:
        print(
            f"{r['check']:42} {r['data']:15} {r['method']:7.3f} {r['anchor']:7.3f} "
            f"{r['diff_points']:8.1f} {r['cpu_s']:6.1f}"
        )
    print(f"(held-out accuracy, median over {args.seeds} seed(s); cpu s = method's CPU time)")


if __name__ == "__main__":
    main()
