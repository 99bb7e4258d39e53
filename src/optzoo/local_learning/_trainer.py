"""What every local-learning trainer shares: validated hyperparameters, checked data, seeded
minibatches, a guarded update that never applies a non-finite step, and one result object.

A trainer owns its loop (DESIGN.md section 2, oracle ``"layer_local"``)::

    trainer = TargetProjectionSGD(lr=0.05, epochs=10)
    result = trainer.fit(model, (inputs, labels), eval_data=(test_inputs, test_labels))
    result.history[-1]["eval_accuracy"], trainer.evaluate(model, (test_inputs, test_labels))

The constructor only stores hyperparameters (checked against ``hyperparameter_ranges``, so a bad
value fails at once with a message naming it); ``fit`` trains ``model`` in place and returns a
``FitResult``. Everything random is drawn from generators seeded by the ``seed`` hyperparameter,
so the same seed and the same model give the same result, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from optzoo._core.validation import Interval, check_hyperparameters

Data = tuple[Tensor, Tensor]

EPOCHS = Interval(1, math.inf, integer=True)
BATCH_SIZE = Interval(1, math.inf, integer=True)
SEED = Interval(0, 2**63 - 1, integer=True)


@dataclass
class FitResult:
    """What ``fit`` returns.

    ``history``: one dict per epoch (per boosting step for the boosting trainer) with at least
    ``"loss"`` (the mean local training loss of that epoch) and ``"accuracy"`` (training-set
    accuracy of the whole model after it), plus ``"eval_accuracy"`` when ``eval_data`` was given.
    ``skipped_updates``: updates not applied because their loss or gradient was not finite.
    ``state_bytes``: bytes of optimizer state per-element tensors (moments, momentum) that the
    trainer keeps for the model's parameters (summed over its optimizers, measured when each
    finishes); transient state of a sub-problem that is thrown away is not counted.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    skipped_updates: int = 0
    state_bytes: int = 0

    @property
    def final_accuracy(self) -> float:
        """Training accuracy after the last epoch (NaN before any epoch)."""
        return self.history[-1]["accuracy"] if self.history else math.nan


class LocalTrainer:
    """Base of the local-learning trainers (not an algorithm itself).

    Subclasses declare ``hyperparameter_ranges`` and implement ``_fit``; they may override
    ``predict`` when the model is not called as ``model(inputs) -> logits``.
    """

    hyperparameter_ranges: ClassVar[dict[str, Interval]] = {}

    def __init__(self, **hyperparameters: Any) -> None:
        check_hyperparameters(self.hyperparameter_ranges, hyperparameters)
        self.hyperparameters = dict(hyperparameters)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"

    # -- public API --------------------------------------------------------------------------

    @classmethod
    def reference_model(cls, in_features: int, num_classes: int, hidden: int = 32) -> nn.Module:
        """A small model of the kind this trainer trains (used by the contract suite and the
        benchmark): ``Linear(in, hidden) -> ReLU -> Linear(hidden, classes)``."""
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def fit(self, model: nn.Module, data: Data, eval_data: Data | None = None) -> FitResult:
        """Train ``model`` in place on ``data = (inputs, labels)``; per-epoch history in the
        result (held-out accuracy too when ``eval_data`` is given)."""
        inputs, labels = check_data(data, "data")
        evaluation = None if eval_data is None else check_data(eval_data, "eval_data")
        self._check_model(model)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("model has no trainable parameters")
        if evaluation is not None and evaluation[0].shape[1:] != inputs.shape[1:]:
            raise ValueError(
                f"eval_data: inputs of shape {tuple(evaluation[0].shape[1:])} per sample, but "
                f"data has {tuple(inputs.shape[1:])}"
            )
        try:
            self.predict(model, inputs[:1])
        except RuntimeError as error:
            raise ValueError(
                f"data: inputs of shape {tuple(inputs.shape[1:])} per sample do not fit the "
                f"model ({error})"
            ) from error
        return self._fit(model, inputs, labels, evaluation)

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """Predicted class index of every row of ``inputs``."""
        return model(inputs).argmax(dim=-1)

    def evaluate(self, model: nn.Module, data: Data) -> float:
        """Accuracy of ``model`` on ``data = (inputs, labels)``, in [0, 1]."""
        inputs, labels = check_data(data, "data")
        return float((self.predict(model, inputs) == labels).double().mean())

    # -- for subclasses ----------------------------------------------------------------------

    def _check_model(self, model: nn.Module) -> None:
        """Raise ``ValueError`` if this trainer cannot train ``model`` (checked first)."""

    def _fit(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, evaluation: Data | None
    ) -> FitResult:
        raise NotImplementedError

    def _record(
        self,
        result: FitResult,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        evaluation: Data | None,
        loss: float,
        **extra: float,
    ) -> None:
        """Append one history entry: ``loss``, training accuracy, held-out accuracy."""
        entry = {**extra, "loss": loss, "accuracy": self.evaluate(model, (inputs, labels))}
        if evaluation is not None:
            entry["eval_accuracy"] = self.evaluate(model, evaluation)
        result.history.append(entry)


def check_data(data: Any, name: str) -> Data:
    """``data`` as ``(inputs, labels)``: floating inputs with a batch dimension, 1-D integer
    labels of the same length, non-empty and finite; anything else is a ``ValueError``."""
    if not isinstance(data, Sequence) or len(data) != 2:
        raise ValueError(f"{name} must be a pair (inputs, labels) of tensors")
    inputs, labels = data
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a pair (inputs, labels) of tensors")
    if inputs.ndim < 2 or not inputs.is_floating_point():
        raise ValueError(
            f"{name}: inputs must be a floating tensor of shape (n, features...), got "
            f"{inputs.dtype} of shape {tuple(inputs.shape)}"
        )
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{name}: labels must be a 1-D integer tensor of class indices, got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if len(inputs) != len(labels):
        raise ValueError(f"{name}: {len(inputs)} inputs but {len(labels)} labels")
    if len(inputs) == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError(f"{name}: inputs contain NaN or infinite values")
    if bool((labels < 0).any()):
        raise ValueError(f"{name}: labels must be non-negative class indices")
    return inputs, labels.long()


def check_num_classes(labels: Tensor, num_classes: int) -> None:
    """Labels must index the model's ``num_classes`` outputs."""
    if int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels go up to {int(labels.max())} but the model has {num_classes} outputs"
        )


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index tensors of one shuffled epoch over ``range(n)`` (the last batch may be short)."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(min(batch_size, n))


def seeded_generator(seed: int, *purpose: int) -> torch.Generator:
    """A CPU generator for one purpose of a trainer's seed (stable across runs)."""
    value = int(seed)
    for p in purpose:
        value = (value * 1_000_003 + int(p) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def guarded_step(loss: Tensor, optimizer: torch.optim.Optimizer) -> bool:
    """``loss.backward()`` then ``optimizer.step()``, unless the loss or a gradient is not
    finite: then the step is skipped (gradients cleared) and ``False`` is returned, so a
    non-finite value never reaches the parameters or the optimizer state."""
    optimizer.zero_grad(set_to_none=True)
    if not bool(torch.isfinite(loss)):
        return False
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not all(bool(torch.isfinite(p.grad).all()) for p in params):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the per-element state tensors of ``optimizer`` (0-dim counters excluded)."""
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, Tensor) and v.ndim > 0
    )


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Rows of the identity: the one-hot code of every label."""
    return torch.nn.functional.one_hot(labels, num_classes).to(dtype)


def split_blocks(model: nn.Module) -> list[nn.Sequential]:
    """The layers of a ``nn.Sequential`` model as trainable blocks: each block starts at a
    module with parameters and keeps the parameter-free modules after it (activation, pooling,
    flatten); parameter-free modules before the first parameterised one join the first block.
    Calling the blocks in turn is calling the model."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"this trainer needs an nn.Sequential model (layers in order), got "
            f"{type(model).__name__}"
        )
    blocks: list[list[nn.Module]] = []
    leading: list[nn.Module] = []
    for module in model:
        if any(True for _ in module.parameters()):
            blocks.append([*leading, module])
            leading = []
        elif blocks:
            blocks[-1].append(module)
        else:
            leading.append(module)
    if not blocks:
        raise ValueError("model has no layer with parameters")
    return [nn.Sequential(*b) for b in blocks]
