"""Deep GA: truncation selection, one elite, Gaussian mutation, individuals stored as seed lists."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT, state_dtype
from optzoo._core.validation import NON_NEGATIVE, Interval
from optzoo.gradient_free.base import COUNT, LossValueOptimizer, random_seeds, seeded_normal
from optzoo.registry import register

NO_SEED = -1


def mutation(seed: int, params: list[Tensor], powers: list[float]) -> list[Tensor]:
    """The mutation ``sigma * eps(seed)`` for each parameter: standard normal noise regenerated
    from ``seed`` (``seeded_normal`` over the parameters' shapes, in order), scaled by each
    parameter's mutation power."""
    noise = seeded_normal(seed, [p.shape for p in params])
    return [
        e.to(p.device, state_dtype(p)) * power
        for e, p, power in zip(noise, params, powers, strict=True)
    ]


@register(
    family="gradient_free",
    paper="Deep Neuroevolution: Genetic Algorithms Are a Competitive Alternative for Training "
    "Deep Neural Networks for Reinforcement Learning",
    year=2017,
    oracle="loss_closure",
    state_bytes_per_param=4 * 1000,  # the population: 1000 individuals of 4 bytes
    needs_closure=True,
    reference_problem="quadratic",
    convergence=(60, 0.5),
    test_hyperparameters={"population_size": 64, "truncation": 8, "lr": 0.1},
)
class DeepGA(LossValueOptimizer):
    """The simple genetic algorithm of "Deep Neuroevolution: Genetic Algorithms Are a
    Competitive Alternative for Training Deep Neural Networks for Reinforcement Learning"
    (Such et al., 2017): no crossover, no gradient estimate, only selection and mutation.

    Each step (one generation) evaluates the N individuals, keeps the T best as parents, copies
    the best unchanged into the next generation (elitism) and fills the other N - 1 slots with
    mutated copies of uniformly chosen parents::

        parents = the T individuals of lowest loss;  elite = the lowest
        child   = parent + sigma * eps(tau),   eps(tau) ~ N(0, I) regenerated from the seed tau

    The model holds the elite. Because every mutation is regenerated from its seed, an
    individual is encoded by its start point and the list of its ancestors' seeds (the paper's
    compact encoding): ``encoding`` holds one row of seeds per candidate of the next
    generation (its last seed is the mutation the next step applies; ``-1`` marks a generation
    in which it was copied unchanged), ``decode(row)`` rebuilds that candidate, and
    ``encoding_bytes(row)`` is its size (8 bytes per mutation against 4 per parameter).

    Defaults from the paper's Atari experiments: population 1000, truncation T = 20, mutation
    power sigma (``lr``) 0.002. Deviations: the paper draws generation 0 from the network's
    initialisation distribution; here it is the model's parameters (the elite slot) and N - 1
    mutations of them. The paper re-evaluates the top 10 individuals 30 times to pick the elite
    under noisy rewards; with a deterministic loss the lowest one is the elite. State: the
    population, N x 4 bytes per float32 parameter; the encoding (N x generations x 8 bytes)
    and the start point (4 bytes per parameter) are kept in ``state_dict()["optzoo"]``.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "population_size": Interval(2.0, math.inf, integer=True),
        "truncation": COUNT,
    }
    shared_hyperparameters = ("population_size", "truncation")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.002,
        population_size: int = 1000,
        truncation: int = 20,
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        if truncation > population_size:
            raise ValueError(
                f"invalid truncation={truncation!r}: expected at most population_size "
                f"({population_size})"
            )
        defaults = {"lr": lr, "population_size": population_size, "truncation": truncation}
        super().__init__(
            params, defaults, seed=seed, max_evaluations=max_evaluations, on_nonfinite=on_nonfinite
        )
        self.encoding = torch.empty((population_size, 0), dtype=torch.int64)
        self._start: list[Tensor] = []

    # -- the seed encoding ----------------------------------------------------------------------
    def decode(self, row: Tensor) -> list[Tensor]:
        """The parameters of the individual whose seed list is ``row``: the start point plus
        each listed mutation (at the param groups' current mutation powers)."""
        params = self.active_params()
        powers = [group["lr"] for group, _ in self.active()]
        values = [s.clone() for s in self._start]
        for tau in row.tolist():
            if tau != NO_SEED:
                for v, m in zip(values, mutation(tau, params, powers), strict=True):
                    v.add_(m.to(v.dtype))
        return values

    @staticmethod
    def encoding_bytes(row: Tensor) -> int:
        """Bytes of the compact encoding of one individual: 8 per mutation seed."""
        return 8 * int((row != NO_SEED).sum())

    # -- ask / tell -----------------------------------------------------------------------------
    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        state["population"] = (
            p.detach()
            .to(state_dtype(p))
            .unsqueeze(0)
            .repeat(group["population_size"], *([1] * p.ndim))
        )

    def _ask(self) -> int:
        params = self.active_params()
        if not self._start:
            self._start = [self.state[p]["population"][0].clone() for p in params]
        if self.encoding.shape[1] == 0:
            # generation 0: the start point (slot 0) and N - 1 mutations of it
            seeds = random_seeds(self.generator, self.param_groups[0]["population_size"])
            seeds[0] = NO_SEED
            self.encoding = seeds.unsqueeze(1)
        # the last column of the encoding holds this generation's mutations, applied here
        # (at the current mutation power) to a copy: a skipped step leaves the state alone
        self._pending = [self.state[p]["population"].clone() for p in params]
        powers = [group["lr"] for group, _ in self.active()]
        for slot, tau in enumerate(self.encoding[:, -1].tolist()):
            if tau != NO_SEED:
                for c, m in zip(self._pending, mutation(tau, params, powers), strict=True):
                    c[slot].add_(m.to(c.dtype))
        return self._pending[0].shape[0]

    def _tell(self, losses: Tensor) -> None:
        n, truncation = self.param_groups[0]["population_size"], self.param_groups[0]["truncation"]
        ranking = torch.sort(losses, stable=True).indices
        parents = ranking[:truncation]
        # slot 0: the elite; slots 1..N-1: children of uniformly drawn parents (mutated by the
        # next _ask with the seeds drawn here)
        choice = torch.randint(0, truncation, (n - 1,), generator=self.generator)
        lineage = torch.cat([parents[:1], parents[choice]])
        seeds = torch.cat([torch.tensor([NO_SEED]), random_seeds(self.generator, n - 1)])
        for p, evaluated in zip(self.active_params(), self._pending, strict=True):
            population = self.state[p]["population"]
            population.copy_(evaluated[lineage.to(evaluated.device)])
            p.copy_(population[0])
        self.encoding = torch.cat([self.encoding[lineage], seeds.unsqueeze(1)], dim=1)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["optzoo"].update(encoding=self.encoding.clone(), start=[s.clone() for s in self._start])
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        extra = state_dict.get("optzoo", {})
        if "encoding" in extra:
            self.encoding = extra["encoding"].clone()
        params = self.active_params()
        self._start = [
            s.to(p.device, state_dtype(p), copy=True)
            for s, p in zip(extra.get("start", []), params, strict=False)
        ]
