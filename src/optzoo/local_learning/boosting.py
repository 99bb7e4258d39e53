"""Sequential training of the last hidden layer by gradient boosting (GBNN)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from optzoo._core.validation import POSITIVE, Interval
from optzoo.local_learning._trainer import (
    SEED,
    Data,
    FitResult,
    LocalTrainer,
    check_num_classes,
    one_hot,
    seeded_generator,
)
from optzoo.registry import register

COUNT = Interval(1, math.inf, integer=True)
FRACTION = Interval(0.0, 1.0, low_open=True)
LBFGS_HISTORY = 10


def newton_step(residuals: Tensor, probabilities: Tensor, fitted: Tensor) -> float:
    """The line-search step ``rho`` for the softmax cross-entropy: one Newton step along
    ``fitted`` from the current outputs, ``sum(f r) / sum(f^2 p (1 - p))`` (diagonal Hessian),
    or 0 when ``fitted`` is zero."""
    denominator = (fitted.square() * probabilities * (1 - probabilities)).sum()
    if not bool(denominator > 0):
        return 0.0
    return float((fitted * residuals).sum() / denominator)


@register(
    family="local_learning",
    paper="Sequential Training of Neural Networks with Gradient Boosting",
    year=2019,
    oracle="layer_local",
    state_bytes_per_param=0,
    reference_problem="mlp",
    convergence=(4, 0.15),
    test_hyperparameters={"units_per_step": 8, "max_iter": 10},
)
class GradientBoostingTrainer(LocalTrainer):
    """GBNN, from "Sequential Training of Neural Networks with Gradient Boosting" (Emami and
    Martinez-Munoz, 2019): the last hidden layer of ``model = nn.Sequential(..., Linear(d, H),
    activation, Linear(H, K))`` is trained ``J = units_per_step`` units at a time, each group
    fitted to the pseudo-residuals of the groups before it; layers before the last hidden layer
    are a fixed feature extractor (the paper's setting for deep models).

    With ``F`` the network's outputs (logits) on the training set, ``p = softmax(F)``::

        F_0   = log(class frequencies)                  (output bias: the best constant)
        for t = 1..H/J:
            r_t   = onehot(y) - p(F_{t-1})              (negative gradient of cross-entropy)
            h_t   = argmin_h ||h(x) - r_t||^2 over a random ``subsample`` of the rows, where
                    h(x) = V act(W_t x + b_t) + c is a J-unit network fitted by L-BFGS
            rho_t = learning_rate * sum(h_t r_t) / sum(h_t^2 p (1 - p))   (Newton step)
            F_t   = F_{t-1} + rho_t h_t(x)

    and the T partial networks are written into the model as one hidden layer of H units (units
    ``(t-1)J..tJ-1`` hold ``W_t, b_t``, their output weights ``rho_t V``, the output bias
    ``F_0 + sum rho_t c``). Each group starts from the model's own initial weights for those
    units. Defaults as in the authors' code: one unit per step, shrinkage 1, subsample 0.5,
    200 iterations per step (sklearn's L-BFGS there; torch's here, with a history of 10 pairs and
    a strong-Wolfe line search; no L2 penalty). History: one entry per boosting step. L-BFGS's
    state (about 24 vectors the size of the J-unit group) lives only while that group is fitted,
    so no optimizer state stays per model parameter.
    """

    hyperparameter_ranges: ClassVar[dict[str, Interval]] = {
        "units_per_step": COUNT,
        "learning_rate": POSITIVE,
        "subsample": FRACTION,
        "max_iter": COUNT,
        "seed": SEED,
    }

    def __init__(
        self,
        units_per_step: int = 1,
        learning_rate: float = 1.0,
        subsample: float = 0.5,
        max_iter: int = 200,
        seed: int = 0,
    ) -> None:
        super().__init__(
            units_per_step=units_per_step,
            learning_rate=learning_rate,
            subsample=subsample,
            max_iter=max_iter,
            seed=seed,
        )
        self.units_per_step, self.learning_rate = int(units_per_step), learning_rate
        self.subsample, self.max_iter, self.seed = subsample, int(max_iter), seed

    def _fit(
        self, model: nn.Module, inputs: Tensor, labels: Tensor, evaluation: Data | None
    ) -> FitResult:
        features_of, hidden, activation, output = _last_hidden_layer(model)
        width, num_classes, units = hidden.out_features, output.out_features, self.units_per_step
        if width % units:
            raise ValueError(
                f"units_per_step={units} must divide the last hidden layer's {width} units"
            )
        check_num_classes(labels, num_classes)
        with torch.no_grad():
            features = features_of(inputs)
        code = one_hot(labels, num_classes, features.dtype)
        generator = seeded_generator(self.seed, 4)
        initial_weight, initial_bias = hidden.weight.detach().clone(), hidden.bias.detach().clone()
        initial_output = output.weight.detach().clone()
        result = FitResult()
        with torch.no_grad():
            counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
            output.bias.copy_((counts.clamp_min(0.5) / counts.sum()).log())
            output.weight.zero_()  # units not yet trained contribute nothing
            hidden.weight.zero_()
            hidden.bias.zero_()
        logits = output.bias.detach().expand(len(inputs), -1).clone()
        for step in range(width // units):
            group = slice(step * units, (step + 1) * units)
            probabilities = logits.softmax(dim=1)
            residuals = code - probabilities
            rows = torch.randperm(len(inputs), generator=generator)
            rows = rows[: max(1, round(self.subsample * len(inputs)))]
            part = _PartialNetwork(
                initial_weight[group], initial_bias[group], initial_output[:, group], activation
            )
            self._fit_part(part, features[rows], residuals[rows])
            with torch.no_grad():
                fitted = part(features)
                rho = self.learning_rate * newton_step(residuals, probabilities, fitted)
                if not (math.isfinite(rho) and bool(torch.isfinite(fitted).all())):
                    result.skipped_updates += 1  # the group stays switched off (zero output)
                    rho, fitted = 0.0, torch.zeros_like(fitted)
                logits = logits + rho * fitted
                hidden.weight[group] = part.weight
                hidden.bias[group] = part.bias
                output.weight[:, group] = rho * part.output_weight
                output.bias.add_(rho * part.output_bias)
            loss = float(functional.cross_entropy(logits, labels))
            self._record(result, model, inputs, labels, evaluation, loss, step=step)
        return result

    def _fit_part(self, part: _PartialNetwork, features: Tensor, residuals: Tensor) -> None:
        """Least squares of ``part`` on ``residuals`` by full-batch L-BFGS (``max_iter``
        iterations); a non-finite objective stops the fit and the part is left as it was at
        its last finite point."""
        optimizer = torch.optim.LBFGS(
            part.parameters(),
            max_iter=self.max_iter,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
        )
        backup = [p.detach().clone() for p in part.parameters()]

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = 0.5 * (part(features) - residuals).square().sum(dim=1).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
        if not all(bool(torch.isfinite(p).all()) for p in part.parameters()):
            with torch.no_grad():
                for p, b in zip(part.parameters(), backup, strict=True):
                    p.copy_(b)


class _PartialNetwork(nn.Module):
    """The J-unit network ``V act(W x + b) + c`` fitted at one boosting step."""

    def __init__(self, weight: Tensor, bias: Tensor, output_weight: Tensor, activation):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.output_weight = nn.Parameter(output_weight.clone())
        self.output_bias = nn.Parameter(torch.zeros(output_weight.shape[0], dtype=weight.dtype))
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.activation(functional.linear(x, self.weight, self.bias))
        return functional.linear(hidden, self.output_weight, self.output_bias)


def _last_hidden_layer(model: nn.Module):
    """``(features_of, hidden, activation, output)`` of ``nn.Sequential(*prefix, hidden:
    Linear, *activation (parameter-free), output: Linear)``."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"GradientBoostingTrainer needs an nn.Sequential model, got {type(model).__name__}"
        )
    layers = list(model)
    with_params = [i for i, m in enumerate(layers) if any(True for _ in m.parameters())]
    if len(with_params) < 2 or with_params[-1] != len(layers) - 1:
        raise ValueError(
            "GradientBoostingTrainer needs a model ending in Linear(d, H), a parameter-free "
            "activation and Linear(H, K)"
        )
    h, o = with_params[-2], with_params[-1]
    hidden, output = layers[h], layers[o]
    if not (isinstance(hidden, nn.Linear) and isinstance(output, nn.Linear)):
        raise ValueError("the last two layers with parameters must be nn.Linear")
    if hidden.bias is None or output.bias is None:
        raise ValueError("the last two Linear layers need biases")
    return nn.Sequential(*layers[:h]), hidden, nn.Sequential(*layers[h + 1 : o]), output
