"""MNIST-1D classification with an MLP and with a small 1-D CNN.

MNIST-1D (Greydanus, "Scaling down Deep Learning", 2020) is a procedurally generated stand-in
for MNIST: ten hand-designed 12-point 1-D "digit" templates are each turned into 500 length-40
signals by random right-padding, resampling, amplitude scaling, circular translation,
correlated background noise, white noise and a linear shear. It is generated here by
``generate_mnist1d`` (written for optzoo from the published procedure; it uses NumPy's own
random generator, so the samples are not bit-identical to the ``mnist1d`` package's, but the
procedure, the parameters and the shapes are). Published test accuracies give a sense of
difficulty: logistic regression ~32%, MLP ~68%, CNN ~94%.

The CNN workload is one where well-tuned momentum SGD is expected to beat Adam (DESIGN.md
section 5), which keeps the suite from favouring adaptive methods.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from optzoo.bench.workloads.base import Split, Workload, offers, register_workload
from optzoo.bench.workloads.supervised import ClassificationTask

# The ten templates of the published data set (one row per digit 0-9), before normalisation.
TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)

# Parameters of the published procedure.
NUM_SAMPLES = 5000
TRAIN_FRACTION = 0.8
PADDING = (36, 60)  # zeros appended to a template: uniform integer in this closed range
SCALE = 0.4  # amplitude multiplied by 1 + SCALE * (u - 0.5)
MAX_TRANSLATION = 48  # circular shift: uniform integer in [0, MAX_TRANSLATION)
CORRELATED_NOISE = 0.25  # std of the white noise that is Gaussian-smoothed (sigma 2)
WHITE_NOISE = 0.02
SHEAR = 0.75  # a linear ramp of slope SHEAR * (u - 0.5) across the signal is subtracted
LENGTH = 40
DATA_SEED = 42


def normalized_templates() -> np.ndarray:
    """Each template standardised, shifted to start at 0 and divided by 6 (shape ``(10, 12)``)."""
    x = TEMPLATES - TEMPLATES.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    return (x - x[:, :1]) / 6.0


def _resample(signal: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of ``signal`` onto ``length`` evenly spaced points."""
    return np.interp(np.linspace(0.0, 1.0, length), np.linspace(0.0, 1.0, len(signal)), signal)


def _resample_rows(signals: np.ndarray, length: int) -> np.ndarray:
    """``_resample`` of every row of a 2-D array (all rows of equal length)."""
    position = np.linspace(0.0, 1.0, length) * (signals.shape[1] - 1)
    left = np.minimum(np.floor(position).astype(int), signals.shape[1] - 2)
    weight = position - left
    return signals[:, left] * (1.0 - weight) + signals[:, left + 1] * weight


def _gaussian_smooth_rows(signals: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Each row convolved with a normalised Gaussian (radius ``truncate * sigma``), mirrored at
    the edges (the sample at the edge repeated, as ``scipy.ndimage``'s default mode)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(signals, ((0, 0), (radius, radius)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(kernel), axis=1)
    return windows @ kernel


@lru_cache(maxsize=4)
def generate_mnist1d(seed: int = DATA_SEED, num_samples: int = NUM_SAMPLES) -> Split:
    """The MNIST-1D data set: ``num_samples // 10`` signals per digit, shuffled, standardised
    with the global mean and std, split 80/20 into train (``x_train`` of shape ``(4000, 40)``)
    and test (``(1000, 40)``); float32 inputs, int64 labels. Cached: do not modify the result."""
    rng = np.random.default_rng(seed)
    templates = normalized_templates()
    per_class = num_samples // len(templates)
    labels = np.repeat(np.arange(len(templates)), per_class)
    count = len(labels)
    width = templates.shape[1] + PADDING[1]

    # Pad with a random number of zeros, then stretch back to a common width (a random dilation).
    # The tiny offset keeps the template's own zero values apart from the padding.
    pads = rng.integers(PADDING[0], PADDING[1] + 1, size=count)
    signals = np.stack(
        [
            _resample(np.concatenate([templates[label] + 1e-8, np.zeros(pad)]), width)
            for label, pad in zip(labels, pads, strict=True)
        ]
    )
    signals *= 1.0 + SCALE * (rng.random((count, 1)) - 0.5)
    shifts = rng.integers(0, MAX_TRANSLATION, size=count)
    rolled = (np.arange(width)[None, :] - shifts[:, None]) % width
    signals = np.take_along_axis(signals, rolled, axis=1)

    # Correlated noise replaces the (exactly zero) background; white noise is added everywhere.
    background = signals == 0
    smooth = _gaussian_smooth_rows(CORRELATED_NOISE * rng.standard_normal((count, width)), 2.0)
    signals = np.where(background, smooth, signals)
    signals = signals + WHITE_NOISE * rng.standard_normal((count, width))
    slope = SHEAR * (rng.random((count, 1)) - 0.5)
    signals = signals - slope * np.linspace(-0.5, 0.5, width)[None, :]
    signals = _resample_rows(signals, LENGTH)

    order = rng.permutation(count)
    signals, labels = signals[order], labels[order]
    signals = (signals - signals.mean()) / signals.std()
    cut = int(count * TRAIN_FRACTION)
    x = torch.from_numpy(signals.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    return Split(x[:cut], y[:cut], x[cut:], y[cut:])


def mlp() -> nn.Module:
    """40 -> 100 -> 100 -> 10 with ReLU (14.2k parameters)."""
    return nn.Sequential(
        nn.Linear(LENGTH, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10)
    )


def cnn() -> nn.Module:
    """Three stride-2 1-D convolutions (32 channels) and a linear read-out (13.0k parameters)."""
    return nn.Sequential(
        nn.Unflatten(1, (1, LENGTH)),
        nn.Conv1d(1, 32, kernel_size=5, stride=2, padding=2),  # 40 -> 20
        nn.ReLU(),
        nn.Conv1d(32, 32, kernel_size=3, stride=2, padding=1),  # 20 -> 10
        nn.ReLU(),
        nn.Conv1d(32, 32, kernel_size=3, stride=2, padding=1),  # 10 -> 5
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 5, 10),
    )


BATCH_SIZE = 100


def build_mlp(seed: int) -> ClassificationTask:
    """The MNIST-1D MLP task for ``seed``."""
    return ClassificationTask(generate_mnist1d(), mlp, BATCH_SIZE, seed)


def build_cnn(seed: int) -> ClassificationTask:
    """The MNIST-1D CNN task for ``seed``."""
    return ClassificationTask(generate_mnist1d(), cnn, BATCH_SIZE, seed)


MNIST1D_MLP = register_workload(
    Workload(
        name="mnist1d_mlp",
        description="MNIST-1D (4000 train / 1000 test length-40 signals), MLP 40-100-100-10, "
        "batch 100, cross-entropy; metric: test error rate",
        build=build_mlp,
        data=generate_mnist1d,
        oracles=offers("gradient", "gradient_closure", "loss_closure"),
        metric="error_rate",
        max_steps=1500,
        time_budget_s=20.0,
        eval_every=100,
        suite=frozenset({"full"}),
    )
)

MNIST1D_CNN = register_workload(
    Workload(
        name="mnist1d_cnn",
        description="MNIST-1D, 1-D CNN (3 stride-2 convolutions of 32 channels + linear), "
        "batch 100, cross-entropy; metric: test error rate (momentum SGD expected to beat Adam)",
        build=build_cnn,
        data=generate_mnist1d,
        oracles=offers("gradient", "gradient_closure"),
        metric="error_rate",
        max_steps=1000,
        time_budget_s=30.0,
        eval_every=50,
        suite=frozenset({"full"}),
    )
)
