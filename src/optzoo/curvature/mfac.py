"""M-FAC: preconditioning by the inverse of an empirical Fisher over a window of m gradients,
applied matrix-free in O(d m) per step."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT, ZooOptimizer, state_dtype
from optzoo._core.rules import ema_
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, UNIT_OPEN_RIGHT, Interval
from optzoo.registry import register

WINDOW = Interval(1.0, math.inf, integer=True)
CONTRACT_WINDOW = 8  # the window the contract suite runs with (see the registration)


def inverse_fisher_product(
    window: Tensor, gram: Tensor, vector: Tensor, products: Tensor, damp: float
) -> Tensor:
    """``(damp I + (1/m) sum_i g_i g_i^T)^{-1} vector`` without forming a d x d matrix.

    ``window`` is the m x d matrix G of the gradients g_i, ``gram`` = G G^T, ``products`` =
    G vector. By Woodbury, the result is ``(vector - G^T c) / damp`` with ``c`` solving the
    m x m system ``(m damp I + G G^T) c = G vector`` (solved in float64 by Cholesky; the matrix
    is at least ``m damp I``). Cost: O(d m) for ``G^T c`` plus O(m^3) for the factorisation.
    """
    m = window.shape[0]
    system = gram.double() + torch.eye(m, dtype=torch.float64, device=gram.device) * (m * damp)
    factor = torch.linalg.cholesky(system)
    coefficients = torch.cholesky_solve(products.double().unsqueeze(1), factor).squeeze(1)
    return (vector - coefficients.to(window.dtype) @ window) / damp


def state_bytes(params: Sequence[Tensor], ngrads: int = 1024, momentum: float = 0.0) -> float:
    """State bytes per parameter element of ``MFAC`` for float32 parameters in one group: the
    m x d window, the m x m Gram matrix, and a d-vector of momentum when ``momentum > 0``."""
    d = sum(p.numel() for p in params)
    floats = ngrads * d + ngrads * ngrads + (d if momentum > 0 else 0)
    return 4 * floats / d


@register(
    family="curvature",
    paper="M-FAC: Efficient Matrix-Free Approximations of Second-Order Information",
    year=2021,
    oracle="gradient",
    state_bytes_per_param=functools.partial(state_bytes, ngrads=CONTRACT_WINDOW),
    reference_problem="logistic",
    convergence=(200, 0.35),
    test_hyperparameters={"lr": 0.1, "ngrads": CONTRACT_WINDOW, "damp": 0.1},
)
class MFAC(ZooOptimizer):
    """M-FAC for optimization: SGD preconditioned by the inverse of a damped empirical Fisher
    built from the last m gradients, the "dynamic algorithm" of Frantar, Kurtic & Alistarh,
    "M-FAC: Efficient Matrix-Free Approximations of Second-Order Information" (NeurIPS 2021).

    Each param group is one flat vector of d elements. Each step the gradient g (plus
    ``weight_decay * x``, an L2 term, as in the authors' code) replaces the oldest row of a ring
    buffer of m gradients (initially zero), and the step is the inverse-Hessian-vector product
    with the empirical Fisher of the window::

        F = damp I + (1/m) sum_{i=1..m} g_i g_i^T
        u = F^{-1} g                          (u = mu u + (1 - mu) F^{-1} g with momentum mu)
        x = x - lr u

    F is never formed: the window G (m x d) and G G^T (m x m, one new row and column per step,
    O(d m)) are kept, and F^{-1} g = (g - G^T c) / damp with (m damp I + G G^T) c = G g
    (``inverse_fisher_product``): O(d m) per step plus O(m^3) on the m x m matrix, as in the
    paper. The paper obtains the same m x m coefficients by an unpivoted LU of m I + G G^T /
    damp (its matrices D and B); a Cholesky factorisation of the equivalent symmetric system is
    used here. With several param groups each group keeps its own window (a block-diagonal
    Fisher); with one group this is the paper's algorithm. Parameters of a group that have no
    gradient in a step count as zero gradient in the window and are not moved.

    Defaults are the authors' (IST-DASLab/M-FAC ``optim.py``): lr 1e-3, ngrads m = 1024,
    damp 1e-5, momentum 0, weight_decay 0. State: 4 m bytes per parameter plus the m x m Gram
    matrix per group (``state_bytes``), kept under the key ``"mfac_group_<i>"`` of ``state``.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "ngrads": WINDOW,
        "damp": POSITIVE,
        "momentum": UNIT_OPEN_RIGHT,
        "weight_decay": NON_NEGATIVE,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        ngrads: int = 1024,
        damp: float = 1e-5,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        defaults = {
            "lr": lr,
            "ngrads": ngrads,
            "damp": damp,
            "momentum": momentum,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def _group_state(self, group: dict[str, Any]) -> dict[str, Any]:
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        key = f"mfac_group_{index}"
        state = self.state[key]
        params = group["params"]
        m = int(group["ngrads"])
        if not state:
            dtype, device = state_dtype(params[0]), params[0].device
            d = sum(p.numel() for p in params)
            state["step"] = 0
            state["window"] = torch.zeros(m, d, dtype=dtype, device=device)
            state["gram"] = torch.zeros(m, m, dtype=dtype, device=device)
        elif state["window"].shape[0] != m:
            raise ValueError(
                f"ngrads changed from {state['window'].shape[0]} to {m} after the first step; "
                "the window size is fixed once it is allocated"
            )
        return state

    def _update_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]):
        state = self._group_state(group)
        window, gram = state["window"], state["gram"]
        with_grad = {id(p): g for p, g in zip(params, grads, strict=True)}
        pieces = []
        for p in group["params"]:
            g = with_grad.get(id(p))
            if g is None:
                pieces.append(torch.zeros(p.numel(), dtype=window.dtype, device=window.device))
                continue
            g = g.to(window.dtype)
            if group["weight_decay"]:
                g = g + p.to(window.dtype) * group["weight_decay"]
            pieces.append(g.reshape(-1))
        flat = torch.cat(pieces)
        slot = state["step"] % window.shape[0]
        window[slot] = flat
        products = window @ flat
        gram[slot] = products
        gram[:, slot] = products
        direction = inverse_fisher_product(window, gram, flat, products, group["damp"])
        if group["momentum"] > 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(flat)
            direction = ema_(state["momentum_buffer"], direction, group["momentum"])
        state["step"] += 1
        offset = 0
        for p in group["params"]:
            n = p.numel()
            if id(p) in with_grad:
                piece = direction[offset : offset + n].view_as(p).to(p.dtype)
                p.add_(piece, alpha=-group["lr"])
            offset += n

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # torch keeps non-parameter entries as given: copy them, so that two optimizers loaded
        # from one state dict never share a window.
        for key, value in list(self.state.items()):
            if isinstance(key, str) and key.startswith("mfac_group_"):
                self.state[key] = {
                    k: v.clone() if isinstance(v, Tensor) else v for k, v in value.items()
                }
