"""tpSGD: layer-wise SGD toward fixed random projections of the labels (no backward pass
across layers)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from optzoo._core.validation import POSITIVE, UNIT_OPEN_RIGHT, Interval, check_choice
from optzoo.local_learning._trainer import (
    BATCH_SIZE,
    EPOCHS,
    SEED,
    Data,
    FitResult,
    LocalTrainer,
    check_num_classes,
    guarded_step,
    minibatches,
    one_hot,
    optimizer_state_bytes,
    seeded_generator,
    split_blocks,
)
from optzoo.registry import register

HIDDEN_LOSSES = ("mse", "l1")
SCHEDULES = ("layerwise", "simultaneous")


@register(
    family="local_learning",
    paper="Learning with Local Gradients at the Edge",
    year=2022,
    oracle="layer_local",
    state_bytes_per_param=0,
    reference_problem="mlp",
    convergence=(8, 0.15),
    test_hyperparameters={"lr": 0.1, "epochs": 8, "batch_size": 32},
    invalid_hyperparameters=(
        ({"hidden_loss": "huber"}, "hidden_loss"),
        ({"schedule": "x"}, "schedule"),
    ),
)
class TargetProjectionSGD(LocalTrainer):
    """tpSGD (target projection stochastic gradient descent) from "Learning with Local
    Gradients at the Edge" (Lomnitz, Daniels, Zhang, Piacentino, 2022).

    Every hidden layer ``i`` of an ``nn.Sequential`` network is trained on its own, against a
    local target: the one-hot label ``y*`` projected by a fixed random matrix ``P_i`` (drawn once
    from ``seed``, entries N(0, projection_scale^2)). The layer's input comes from a forward pass
    through the layers below and is treated as a constant, so no error is propagated between
    layers; the output layer is trained with cross-entropy against the label itself (tpSGD's
    generalisation of direct random target projection to any loss). With the squared loss the
    update of layer ``i`` (output ``y_i = s(z_i)``, ``z_i = W_i x_{i-1}``) is the delta rule::

        J_i = 1/2 ||P_i y* - y_i||^2                      (l1: ||P_i y* - y_i||_1)
        W_i <- W_i + lr * ((P_i y* - y_i) * s'(z_i)) x_{i-1}^T      (batch mean)

    ``schedule="layerwise"`` (the paper's layer-by-layer training) trains layer 1 for ``epochs``
    epochs on inputs computed once by a forward pass, then layer 2 on layer 1's outputs, ...,
    then the output layer; ``"simultaneous"`` updates every layer from the same forward pass
    (DRTP-style). Plain SGD (``momentum=0``) keeps no optimizer state. Defaults: plain SGD and
    layer-by-layer training as in the paper; ``lr``, ``epochs``, ``batch_size`` and the
    projection's distribution are optzoo's choices (not given in the abstract).
    """

    hyperparameter_ranges: ClassVar[dict[str, Interval]] = {
        "lr": POSITIVE,
        "momentum": UNIT_OPEN_RIGHT,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "projection_scale": POSITIVE,
        "seed": SEED,
    }

    def __init__(
        self,
        lr: float = 0.05,
        momentum: float = 0.0,
        epochs: int = 10,
        batch_size: int = 32,
        hidden_loss: str = "mse",
        schedule: str = "layerwise",
        projection_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            lr=lr,
            momentum=momentum,
            epochs=epochs,
            batch_size=batch_size,
            projection_scale=projection_scale,
            seed=seed,
        )
        check_choice("hidden_loss", hidden_loss, HIDDEN_LOSSES)
        check_choice("schedule", schedule, SCHEDULES)
        self.lr, self.momentum, self.epochs = lr, momentum, int(epochs)
        self.batch_size, self.projection_scale, self.seed = int(batch_size), projection_scale, seed
        self.hidden_loss, self.schedule = hidden_loss, schedule

    # -- the paper's pieces ------------------------------------------------------------------

    def projection(self, layer: int, width: int, num_classes: int) -> Tensor:
        """The fixed random matrix ``P_layer`` (``width x num_classes``, float64) of hidden
        layer ``layer`` (0-based): the same for the same seed, layer and shape."""
        generator = seeded_generator(self.seed, 1, layer)
        return self.projection_scale * torch.randn(
            width, num_classes, generator=generator, dtype=torch.float64
        )

    def local_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``J_i``: batch mean of ``1/2 ||target - output||^2`` (or of the l1 norm)."""
        difference = output.flatten(1) - target
        if self.hidden_loss == "l1":
            return difference.abs().sum(dim=1).mean()
        return 0.5 * difference.square().sum(dim=1).mean()

    # -- training ----------------------------------------------------------------------------

    def _fit(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, evaluation: Data | None
    ) -> FitResult:
        blocks = split_blocks(model)
        with torch.no_grad():
            widths = [o.flatten(1).shape[1] for o in _block_outputs(blocks, inputs[:1])]
        num_classes = widths[-1]
        check_num_classes(labels, num_classes)
        code = one_hot(labels, num_classes, inputs.dtype)
        targets = [
            code @ self.projection(i, w, num_classes).to(inputs.dtype).T
            for i, w in enumerate(widths[:-1])
        ]
        result = FitResult()
        if self.schedule == "layerwise":
            self._fit_layerwise(model, blocks, inputs, labels, targets, evaluation, result)
        else:
            self._fit_simultaneous(model, blocks, inputs, labels, targets, evaluation, result)
        return result

    def _block_loss(self, index: int, block: nn.Module, x: Tensor, labels, targets) -> Tensor:
        output = block(x)
        if index == len(targets):  # the output layer: the task's loss against the label
            return functional.cross_entropy(output, labels)
        return self.local_loss(output, targets[index])

    def _optimizer(self, params) -> torch.optim.SGD:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

    def _fit_layerwise(self, model, blocks, inputs, labels, targets, evaluation, result):
        layer_input = inputs
        for index, block in enumerate(blocks):
            optimizer = self._optimizer(block.parameters())
            generator = seeded_generator(self.seed, 2, index)
            for epoch in range(self.epochs):
                total, count = 0.0, 0
                for batch in minibatches(len(inputs), self.batch_size, generator):
                    selected = [t[batch] for t in targets]
                    loss = self._block_loss(
                        index, block, layer_input[batch], labels[batch], selected
                    )
                    if guarded_step(loss, optimizer):
                        total, count = total + float(loss.detach()), count + 1
                    else:
                        result.skipped_updates += 1
                mean = total / count if count else float("nan")
                self._record(
                    result, model, inputs, labels, evaluation, mean, layer=index, epoch=epoch
                )
            result.state_bytes += optimizer_state_bytes(optimizer)
            with torch.no_grad():  # the next layer learns on this layer's (fixed) outputs
                layer_input = block(layer_input)

    def _fit_simultaneous(self, model, blocks, inputs, labels, targets, evaluation, result):
        optimizer = self._optimizer(model.parameters())
        generator = seeded_generator(self.seed, 2, 0)
        for epoch in range(self.epochs):
            total, count = 0.0, 0
            for batch in minibatches(len(inputs), self.batch_size, generator):
                x, losses = inputs[batch], []
                selected = [t[batch] for t in targets]
                for index, block in enumerate(blocks):
                    losses.append(self._block_loss(index, block, x, labels[batch], selected))
                    with torch.no_grad():  # the next layer sees this output as a constant
                        x = block(x)
                loss = torch.stack(losses).sum()  # disjoint parameters: local gradients only
                if guarded_step(loss, optimizer):
                    total, count = total + float(loss.detach()), count + 1
                else:
                    result.skipped_updates += 1
            mean = total / count if count else float("nan")
            self._record(result, model, inputs, labels, evaluation, mean, epoch=epoch)
        result.state_bytes = optimizer_state_bytes(optimizer)


def _block_outputs(blocks: list[nn.Sequential], x: Tensor) -> list[Tensor]:
    outputs = []
    for block in blocks:
        x = block(x)
        outputs.append(x)
    return outputs
