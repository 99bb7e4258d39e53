"""CBO: consensus-based optimization, a swarm of particles drifting to a Gibbs-weighted mean."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT, state_dtype
from optzoo._core.validation import NON_NEGATIVE, Interval, check_choice
from optzoo.gradient_free.base import COUNT, LossValueOptimizer
from optzoo.registry import register

NoiseKind = Literal["isotropic", "anisotropic"]


def gibbs_weights(losses: Tensor, alpha: float) -> Tensor:
    """``exp(-alpha f_i) / sum_j exp(-alpha f_j)``, computed stably (shift by the minimum);
    an infinite loss gets weight 0."""
    finite = torch.isfinite(losses)
    shifted = losses - losses[finite].min()
    logits = torch.where(finite, -alpha * shifted, -math.inf)
    return torch.softmax(logits, dim=0)


def weighted_mean(weights: Tensor, points: Tensor) -> Tensor:
    """``sum_i weights[i] * points[i]`` over the leading dimension; points of weight 0 are
    left out (so a particle that overflowed to inf cannot turn the mean into NaN)."""
    keep = (weights > 0).nonzero().squeeze(1)
    return torch.tensordot(weights[keep].to(points.dtype), points[keep.to(points.device)], dims=1)


@register(
    family="gradient_free",
    paper="Gradient is All You Need?",
    year=2023,
    oracle="loss_closure",
    state_bytes_per_param=4 * 20,  # 20 particles (the default population) of 4 bytes
    needs_closure=True,
    reference_problem="quadratic",
    convergence=(100, 0.5),
    # anisotropic noise: isotropic noise with sigma^2 d > 2 lambda spreads the swarm in 32-D
    test_hyperparameters={
        "population_size": 50,
        "lr": 0.1,
        "sigma": 2.0,
        "alpha": 100.0,
        "noise": "anisotropic",
    },
)
class CBO(LossValueOptimizer):
    """Consensus-based optimization, read as a stochastic relaxation of gradient descent in
    "Gradient is All You Need?" (Riedl, Klock, Geldhauser & Fornasier, 2023).

    N particles explore the loss; each step every particle drifts towards the consensus point,
    a softmin-weighted mean of the particles (the Laplace principle: as alpha grows it tends to
    the best particle), and diffuses with noise proportional to its distance from it, so the
    swarm contracts once it agrees. The Euler-Maruyama step with time step dt (``lr``), on a
    random batch B of particles (Carrillo et al.'s mini-batched CBO; one batch = all N by
    default) is::

        v_B  = sum_{j in B} x_j exp(-alpha f(x_j)) / sum_{j in B} exp(-alpha f(x_j))
        x_i <- x_i - lambda dt (x_i - v_B) + sigma sqrt(dt) |x_i - v_B|_2 xi_i   (isotropic)
        x_i <- x_i - lambda dt (x_i - v_B) + sigma sqrt(dt) (x_i - v_B) * xi_i   (anisotropic)

    with xi_i standard normal; a step draws a fresh partition of the particles into batches of
    ``batch_size`` and updates every batch (N evaluations). The model then holds the consensus
    point of all particles. Particles start at the model's parameters plus ``init_std`` times
    standard normal noise (the paper starts them from a distribution rho_0 covering the
    minimizer; pass an ``init_std`` as wide as the region to search).

    Defaults: the paper's parameters alpha, lambda, sigma and dt take the values of CBXpy, the
    authors' library (dt 0.01, lambda 1, sigma 5.1, alpha 1, 20 particles, isotropic noise,
    no batching); init_std 1 is ours. State: the particles, N x 4 bytes per float32 parameter
    (float32 for bfloat16 models). Names: ``lr`` is dt (so LR schedulers anneal the time
    step), ``drift`` is lambda, ``batch_size`` the particles per consensus. The isotropic
    variant needs roughly 2 lambda > sigma^2 d to contract in d dimensions; the anisotropic one
    (Carrillo et al., 2021) does not depend on d. The step is CBXpy's step; where they differ:
    one step here updates every batch (N evaluations), one CBXpy step one batch; CBXpy's
    ``optimize()`` multiplies alpha by 1.05 a step unless given ``sched=None`` (here alpha is
    constant, as in the paper; anneal it by setting ``param_groups[0]["alpha"]``); CBXpy clips
    particles to +-1e8. Measured against CBXpy at equal settings, 100k evaluations, 20 seeds
    (``benchmarks/gradient_free.py --part cbo``): median best value on Rastrigin-30 4.00 here,
    4.29 there; Ackley-30 1.24 and 1.21; no difference beyond seed noise.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "alpha": NON_NEGATIVE,
        "drift": NON_NEGATIVE,
        "sigma": NON_NEGATIVE,
        "population_size": Interval(2.0, math.inf, integer=True),
        "batch_size": COUNT,
        "init_std": NON_NEGATIVE,
    }
    shared_hyperparameters = ("alpha", "population_size", "batch_size", "noise")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        alpha: float = 1.0,
        drift: float = 1.0,
        sigma: float = 5.1,
        population_size: int = 20,
        batch_size: int | None = None,
        noise: NoiseKind = "isotropic",
        init_std: float = 1.0,
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_choice("noise", noise, ("isotropic", "anisotropic"))
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "drift": drift,
            "sigma": sigma,
            "population_size": population_size,
            "batch_size": population_size if batch_size is None else batch_size,
            "noise": noise,
            "init_std": init_std,
        }
        super().__init__(
            params, defaults, seed=seed, max_evaluations=max_evaluations, on_nonfinite=on_nonfinite
        )
        self._order: Tensor | None = None

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        n = group["population_size"]
        spread = torch.randn((n, *p.shape), generator=self.generator)
        start = p.detach().to(state_dtype(p)).unsqueeze(0)
        state["particles"] = start + spread.to(p.device, start.dtype) * group["init_std"]

    def _ask(self) -> int:
        particles = [self.state[p]["particles"] for p in self.active_params()]
        self._pending = particles
        self._order = torch.randperm(particles[0].shape[0], generator=self.generator)
        return particles[0].shape[0]

    def _tell(self, losses: Tensor) -> None:
        first = self.param_groups[0]
        alpha, size, isotropic = first["alpha"], first["batch_size"], first["noise"] == "isotropic"
        pairs = self.active()
        particles = [self.state[p]["particles"] for _, p in pairs]
        # the model holds the consensus point of the whole swarm before it moves
        weights = gibbs_weights(losses, alpha)
        for (_, p), x in zip(pairs, particles, strict=True):
            p.copy_(weighted_mean(weights.to(x.device), x))
        assert self._order is not None
        for batch in self._order.split(size):
            batch_losses = losses[batch]
            if not bool(torch.isfinite(batch_losses).any()):
                continue
            weights = gibbs_weights(batch_losses, alpha)
            drifts = []
            for x in particles:
                members = x[batch.to(x.device)]
                drifts.append(members - weighted_mean(weights.to(x.device), members))
            if isotropic:
                squares = [d.flatten(1).double().square().sum(1).cpu() for d in drifts]
                distance = torch.stack(squares).sum(0).sqrt()
            for (group, _), x, d in zip(pairs, particles, drifts, strict=True):
                xi = torch.randn(d.shape, generator=self.generator).to(d.device, d.dtype)
                if isotropic:
                    scale = distance.to(d.device, d.dtype).reshape(-1, *([1] * (d.ndim - 1)))
                    diffusion = scale * xi
                else:
                    diffusion = d * xi
                dt = group["lr"]
                index = batch.to(x.device)
                x[index] = (
                    x[index] - group["drift"] * dt * d + group["sigma"] * math.sqrt(dt) * diffusion
                )
