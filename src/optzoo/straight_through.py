"""Straight-through and surrogate-gradient estimators for sign, step and staircase activations.

The forward pass is the exact non-differentiable function (so a trained network runs
unchanged without these wrappers); only the backward pass is replaced, by one of:

- ``"identity"``: the straight-through estimator: the incoming gradient is copied unchanged
  ("Estimating or Propagating Gradients Through Stochastic Neurons for Conditional
  Computation", Bengio, Leonard and Courville, 2013);
- ``"saturated"``: straight-through inside ``|u| <= 1`` and zero outside (the gradient of a hard
  tanh; the usual estimator for binarized networks);
- ``"sigmoid"``: surrogate gradient ``beta * s (1 - s)`` with ``s = sigmoid(beta u)``, the
  derivative of a sigmoid of steepness ``beta``;
- ``"fast_sigmoid"``: surrogate gradient ``1 / (1 + beta |u|)^2`` (SuperSpike's fast sigmoid).

Surrogate gradients are scaled by the jump height (2 for ``sign``, 1 for ``step``; one step of
the staircase for ``staircase``), so they are the derivative of a smooth function that tends to
the activation as ``beta`` grows; ``u`` is the distance to the (nearest) jump, in units of the
staircase step for ``staircase``. "A generalized neural tangent kernel for surrogate gradient
learning" (Eilers, Memmesheimer and Goedeke, 2024) analyses such surrogate-gradient training of
sign networks.

Functions ``sign``, ``step``, ``staircase`` and modules ``Sign``, ``Step``, ``Staircase``::

    net = nn.Sequential(nn.Linear(64, 64), Sign("saturated"), nn.Linear(64, 10))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from optzoo._core.validation import POSITIVE, check_choice, check_value

ESTIMATORS = ("identity", "saturated", "sigmoid", "fast_sigmoid")


def surrogate_derivative(u: Tensor, estimator: str, beta: float) -> Tensor:
    """The backward factor of ``estimator`` at ``u`` (distance to the jump), per unit jump."""
    if estimator == "identity":
        return torch.ones_like(u)
    if estimator == "saturated":
        return (u.abs() <= 1).to(u.dtype)
    if estimator == "sigmoid":
        s = torch.sigmoid(beta * u)
        return beta * s * (1 - s)
    return 1.0 / (1.0 + beta * u.abs()).square()


def _forward(x: Tensor, kind: str, width: float) -> Tensor:
    if kind == "sign":
        return torch.sign(x)
    if kind == "step":
        return (x > 0).to(x.dtype)
    return torch.round(x / width) * width


class _SurrogateFunction(torch.autograd.Function):
    """Exact forward of ``kind``; backward ``grad * factor`` of the chosen estimator."""

    @staticmethod
    def forward(x: Tensor, kind: str, estimator: str, beta: float, width: float) -> Tensor:
        return _forward(x, kind, width)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, kind, estimator, beta, width = inputs
        ctx.save_for_backward(x)
        ctx.kind, ctx.estimator, ctx.beta, ctx.width = kind, estimator, beta, width

    @staticmethod
    def backward(ctx: Any, grad: Tensor):
        (x,) = ctx.saved_tensors
        factor = _backward_factor(x, ctx.kind, ctx.estimator, ctx.beta, ctx.width)
        return grad * factor, None, None, None, None


def _backward_factor(x: Tensor, kind: str, estimator: str, beta: float, width: float) -> Tensor:
    """What the incoming gradient is multiplied by."""
    if estimator == "identity" or (kind == "staircase" and estimator == "saturated"):
        return torch.ones_like(x)  # straight-through (a staircase never saturates)
    if kind == "staircase":
        scaled = x / width
        return surrogate_derivative(scaled - torch.floor(scaled) - 0.5, estimator, beta)
    if estimator == "saturated":
        return surrogate_derivative(x, estimator, beta)
    jump = 2.0 if kind == "sign" else 1.0
    return jump * surrogate_derivative(x, estimator, beta)


def _apply(x: Tensor, kind: str, estimator: str, beta: float, width: float = 1.0) -> Tensor:
    check_choice("estimator", estimator, ESTIMATORS)
    check_value("beta", beta, POSITIVE)
    return _SurrogateFunction.apply(x, kind, estimator, float(beta), float(width))


def sign(x: Tensor, estimator: str = "identity", beta: float = 1.0) -> Tensor:
    """``torch.sign(x)`` (-1, 0, +1) with the backward pass of ``estimator``."""
    return _apply(x, "sign", estimator, beta)


def step(x: Tensor, estimator: str = "identity", beta: float = 1.0) -> Tensor:
    """The Heaviside step ``1[x > 0]`` with the backward pass of ``estimator``."""
    return _apply(x, "step", estimator, beta)


def staircase(
    x: Tensor, width: float = 0.25, estimator: str = "identity", beta: float = 1.0
) -> Tensor:
    """``round(x / width) * width`` with the backward pass of ``estimator`` (``"saturated"``
    copies the gradient everywhere, as ``"identity"``: a staircase does not saturate)."""
    check_value("width", width, POSITIVE)
    return _apply(x, "staircase", estimator, beta, width)


class _Activation(nn.Module):
    kind = "sign"

    def __init__(self, estimator: str = "identity", beta: float = 1.0) -> None:
        super().__init__()
        check_choice("estimator", estimator, ESTIMATORS)
        check_value("beta", beta, POSITIVE)
        self.estimator, self.beta = estimator, float(beta)

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}, beta={self.beta:g}"


class Sign(_Activation):
    """``torch.sign`` as a layer, with a straight-through or surrogate backward pass."""

    def forward(self, x: Tensor) -> Tensor:
        return sign(x, self.estimator, self.beta)


class Step(_Activation):
    """The Heaviside step ``1[x > 0]`` as a layer, with a straight-through or surrogate
    backward pass."""

    def forward(self, x: Tensor) -> Tensor:
        return step(x, self.estimator, self.beta)


class Staircase(_Activation):
    """``round(x / width) * width`` as a layer, with a straight-through or surrogate backward
    pass."""

    def __init__(self, width: float = 0.25, estimator: str = "identity", beta: float = 1.0):
        super().__init__(estimator, beta)
        check_value("width", width, POSITIVE)
        self.width = float(width)

    def forward(self, x: Tensor) -> Tensor:
        return staircase(x, self.width, self.estimator, self.beta)

    def extra_repr(self) -> str:
        return f"width={self.width:g}, " + super().extra_repr()


__all__ = [
    "ESTIMATORS",
    "Sign",
    "Staircase",
    "Step",
    "sign",
    "staircase",
    "step",
    "surrogate_derivative",
]
