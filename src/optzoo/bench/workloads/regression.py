"""Small MLP regression with per-sample residuals (for least-squares methods such as Sven).

``regression_1d`` fits a wiggly 1-D function from 512 noisy samples; ``diabetes_mlp`` fits
scikit-learn's bundled diabetes data (``sklearn.datasets.load_diabetes``: 442 patients, 10
features, shipped inside the package). Inputs and targets are standardised with training
statistics. The metric is the held-out mean squared error (for diabetes, in units of the
target's variance: 1.0 is predicting the mean).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from optzoo.bench.workloads.base import Split, Workload, generator, offers, register_workload
from optzoo.bench.workloads.digits import stratified_split
from optzoo.bench.workloads.sklearn_data import diabetes_arrays
from optzoo.bench.workloads.supervised import RegressionTask

DATA_SEED = 0


def wiggly(x: Tensor) -> Tensor:
    """The 1-D target function on [-1, 1]: two frequencies under a slow envelope."""
    return torch.sin(3 * math.pi * x) * (1 - 0.5 * x) + 0.5 * torch.cos(7 * x)


@lru_cache(maxsize=1)
def make_1d(train: int = 512, test: int = 512, noise: float = 0.1) -> Split:
    """``train`` uniform samples with Gaussian label noise, ``test`` noise-free grid points."""
    g = generator(DATA_SEED, "regression_1d")
    x_train = 2 * torch.rand(train, 1, generator=g) - 1
    y_train = wiggly(x_train).reshape(-1) + noise * torch.randn(train, generator=g)
    x_test = torch.linspace(-1, 1, test).reshape(-1, 1)
    return Split(x_train, y_train, x_test, wiggly(x_test).reshape(-1))


@lru_cache(maxsize=1)
def load_diabetes_split() -> Split:
    """Diabetes, a fixed 342/100 split, features and target standardised with the training
    mean and std (float32)."""
    features, target = diabetes_arrays()
    # One "class" for everyone: stratified_split is then a plain seeded random split.
    train, test = stratified_split(np.zeros(len(target)), 100 / 442, DATA_SEED)
    x = torch.from_numpy(features.astype(np.float32))
    y = torch.from_numpy(target.astype(np.float32))
    x_mean, x_std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    x, y = (x - x_mean) / x_std, (y - y_mean) / y_std
    return Split(x[train], y[train], x[test], y[test])


def mlp(inputs: int, hidden: int) -> nn.Module:
    """inputs -> hidden -> hidden -> 1 with tanh."""
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, 1),
    )


def build_1d(seed: int) -> RegressionTask:
    """The 1-D regression task for ``seed`` (MLP 1-64-64-1, batch 64)."""
    return RegressionTask(make_1d(), lambda: mlp(1, 64), 64, seed)


def build_diabetes(seed: int) -> RegressionTask:
    """The diabetes regression task for ``seed`` (MLP 10-32-32-1, batch 32)."""
    return RegressionTask(load_diabetes_split(), lambda: mlp(10, 32), 32, seed)


ORACLES = offers(
    "gradient", "gradient_closure", "loss_closure", "per_sample_residuals", "per_sample_losses"
)

REGRESSION_1D = register_workload(
    Workload(
        name="regression_1d",
        description="fit a 1-D function from 512 noisy samples with an MLP 1-64-64-1 (tanh), "
        "batch 64, squared error; metric: test MSE on a noise-free grid",
        build=build_1d,
        data=make_1d,
        oracles=ORACLES,
        metric="test_mse",
        max_steps=1500,
        time_budget_s=20.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)

DIABETES_MLP = register_workload(
    Workload(
        name="diabetes_mlp",
        description="scikit-learn diabetes (342 train / 100 test, 10 standardised features), "
        "MLP 10-32-32-1 (tanh), batch 32, squared error; metric: test MSE (standardised target)",
        build=build_diabetes,
        data=load_diabetes_split,
        oracles=ORACLES,
        metric="test_mse",
        max_steps=400,
        time_budget_s=20.0,
        eval_every=20,
        suite=frozenset({"full"}),
    )
)
