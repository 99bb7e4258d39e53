"""A small CNN on scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``:
1797 8x8 images with 17 grey levels, shipped inside the scikit-learn package, so nothing is
downloaded)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor, nn

from optzoo.bench.workloads.base import Split, Workload, offers, register_workload
from optzoo.bench.workloads.sklearn_data import digits_arrays
from optzoo.bench.workloads.supervised import ClassificationTask

DATA_SEED = 0
TEST_FRACTION = 0.25


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Train and test index arrays holding ``test_fraction`` of every class in the test part."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.append(members[:cut])
        train.append(members[cut:])
    return (
        torch.from_numpy(rng.permutation(np.concatenate(train))),
        torch.from_numpy(rng.permutation(np.concatenate(test))),
    )


@lru_cache(maxsize=1)
def load_digits_split() -> Split:
    """Digits as float32 images of shape ``(n, 1, 8, 8)`` scaled to [0, 1], int64 labels, a fixed
    stratified 75/25 split (1347 train / 450 test). Cached: do not modify the result."""
    pixels, target = digits_arrays()
    images = torch.from_numpy((pixels / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(target.astype(np.int64))
    train, test = stratified_split(target, TEST_FRACTION, DATA_SEED)
    return Split(images[train], labels[train], images[test], labels[test])


def cnn() -> nn.Module:
    """conv 3x3 (16) -> conv 3x3 (32) -> max-pool 2 -> linear 512 -> 10, ReLU (10.9k params)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


BATCH_SIZE = 64


def build_cnn(seed: int) -> ClassificationTask:
    """The digits CNN task for ``seed``."""
    return ClassificationTask(load_digits_split(), cnn, BATCH_SIZE, seed)


DIGITS_CNN = register_workload(
    Workload(
        name="digits_cnn",
        description="scikit-learn digits (1347 train / 450 test 8x8 images), CNN "
        "conv16-conv32-pool-linear, batch 64, cross-entropy; metric: test error rate",
        build=build_cnn,
        data=load_digits_split,
        oracles=offers("gradient", "gradient_closure"),
        metric="error_rate",
        max_steps=400,
        time_budget_s=30.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)
