"""PolyStep: probe a rotated polytope around each block of coordinates, move to the softmax
barycentre of its vertices (a one-sided entropic optimal-transport step)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, check_choice
from optzoo.gradient_free.base import COUNT, LossValueOptimizer
from optzoo.registry import register

Polytope = Literal["simplex", "orthoplex"]


def simplex_vertices(dim: int) -> Tensor:
    """The ``dim + 1`` vertices of a regular simplex centred at the origin, unit norm."""
    corners = torch.eye(dim + 1, dtype=torch.float64)
    centred = corners - corners.mean(0)
    basis = torch.linalg.svd(centred, full_matrices=False).Vh[:dim]  # the simplex's own plane
    points = centred @ basis.T
    return points / points.norm(dim=1, keepdim=True)


def orthoplex_vertices(dim: int) -> Tensor:
    """The ``2 dim`` vertices +-e_i of the cross-polytope."""
    eye = torch.eye(dim, dtype=torch.float64)
    return torch.cat([eye, -eye])


def random_rotations(count: int, dim: int, generator: torch.Generator) -> Tensor:
    """``count`` Haar-random rotations of R^dim (QR of a Gaussian matrix, signs fixed so the
    distribution is uniform and the determinant +1), float64."""
    gaussian = torch.randn(count, dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


class _Block:
    """Where block ``i`` of a param group's flat vector lives: (parameter, start, stop, offset
    in the block) pieces, for blocks that straddle tensors."""

    def __init__(self, params: list[Tensor], block: int) -> None:
        self.params = params
        self.block = block
        self.bounds: list[int] = [0]
        for p in params:
            self.bounds.append(self.bounds[-1] + p.numel())

    def pieces(self, i: int) -> list[tuple[Tensor, int, int, int]]:
        lo, hi = i * self.block, min((i + 1) * self.block, self.bounds[-1])
        out = []
        for p, start, stop in zip(self.params, self.bounds, self.bounds[1:], strict=False):
            a, b = max(lo, start), min(hi, stop)
            if a < b:
                out.append((p, a - start, b - start, a - lo))
        return out


@register(
    family="gradient_free",
    paper="Training Non-Differentiable Networks via Optimal Transport",
    year=2026,
    oracle="loss_closure",
    state_bytes_per_param=0,  # the particles are the parameters themselves
    needs_closure=True,
    reference_problem="quadratic",
    convergence=(25, 1.0),
    test_hyperparameters={"lr": 0.3},
)
class PolyStep(LossValueOptimizer):
    """PolyStep, the gradient-free optimizer of "Training Non-Differentiable Networks via
    Optimal Transport" (2026): forward passes only, no gradient and no surrogate.

    Each param group's parameters, flattened, are cut into particles x_i of ``particle_dim``
    coordinates. Every step gives each particle a fresh random rotation R_i of a unit polytope
    (vertices s_v: a regular simplex, or an orthoplex), evaluates the loss with that particle
    alone moved to each probe point, and moves it to the softmax-weighted barycentre of the
    polytope's vertices, the one-sided (row-marginal) limit of entropic optimal transport from
    particles to vertices::

        C_iv = f(x with x_i -> x_i + r_probe R_i s_v / 2)
        w_iv = softmax_v(-(C_iv - min_v C_iv) / (epsilon * scale_cost))
        x_i <- sum_v w_iv (x_i + r_step R_i s_v),   r_step = step_radius * epsilon,
                                                    r_probe = probe_radius * epsilon

    epsilon (``lr``) is both the temperature and the unit of both radii, so it acts as the
    learning rate (LR schedulers anneal it). A step costs (n / particle_dim) * V evaluations
    for n parameters (1.5 n with the default simplex in 2-D).

    Defaults are those of the authors' package ``polystep`` (PolyStepOptimizer): simplex,
    particle_dim 2, epsilon 0.1, step_radius 1, probe_radius 2 (one probe, at half of it),
    scale_cost 1. Deviations: the package solves the full-space plan with Sinkhorn by default
    and its softmax solver in subspace mode; here the plan is always the softmax the paper
    describes. Not implemented: the compressed random subspace, momentum, adaptive radii and
    probe jitter of the package. No state beyond the seeded generator (0 bytes per parameter).
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "particle_dim": COUNT,
        "step_radius": NON_NEGATIVE,
        "probe_radius": POSITIVE,
        "scale_cost": POSITIVE,
    }

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.1,
        particle_dim: int = 2,
        polytope: Polytope = "simplex",
        step_radius: float = 1.0,
        probe_radius: float = 2.0,
        scale_cost: float = 1.0,
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_choice("polytope", polytope, ("simplex", "orthoplex"))
        defaults = {
            "lr": lr,
            "particle_dim": particle_dim,
            "polytope": polytope,
            "step_radius": step_radius,
            "probe_radius": probe_radius,
            "scale_cost": scale_cost,
        }
        super().__init__(
            params, defaults, seed=seed, max_evaluations=max_evaluations, on_nonfinite=on_nonfinite
        )
        self._plan: list[dict[str, Any]] = []
        self._written: tuple[int, int] | None = None

    # -- geometry of one step -------------------------------------------------------------------
    def _ask(self) -> int:
        self._plan = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                continue
            block = group["particle_dim"]
            n = sum(p.numel() for p in params)
            count = math.ceil(n / block)
            flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in params])
            centre = torch.nn.functional.pad(flat, (0, count * block - n)).reshape(count, block)
            vertices = (simplex_vertices if group["polytope"] == "simplex" else orthoplex_vertices)(
                block
            )
            rotated = torch.einsum(
                "pij,vj->pvi", random_rotations(count, block, self.generator), vertices
            )
            probe = centre.unsqueeze(1) + rotated * (group["probe_radius"] * group["lr"] / 2)
            self._plan.append(
                {"group": group, "layout": _Block(params, block), "centre": centre,
                 "rotated": rotated, "probe": probe, "first": 0}
            )  # fmt: skip
        total = 0
        for entry in self._plan:
            entry["first"] = total
            total += entry["probe"].shape[0] * entry["probe"].shape[1]
        return total

    def _locate(self, k: int) -> tuple[int, int, int]:
        """(plan entry, particle, vertex) of candidate ``k``."""
        for index, entry in enumerate(self._plan):
            count, vertices = entry["probe"].shape[:2]
            if k < entry["first"] + count * vertices:
                particle, vertex = divmod(k - entry["first"], vertices)
                return index, particle, vertex
        raise IndexError(k)

    @staticmethod
    def _put(entry: dict[str, Any], particle: int, values: Tensor) -> None:
        for p, start, stop, offset in entry["layout"].pieces(particle):
            piece = values[offset : offset + stop - start].to(p.device, p.dtype)
            p.view(-1)[start:stop] = piece

    # -- ask / tell -----------------------------------------------------------------------------
    def _save(self) -> None:  # candidates move one particle at a time; the centre is in _plan
        self._written = None

    def _restore(self) -> None:
        if self._written is not None:
            index, particle = self._written
            entry = self._plan[index]
            self._put(entry, particle, entry["centre"][particle])
        self._written = None

    def _write_candidate(self, k: int) -> None:
        self._restore()
        index, particle, vertex = self._locate(k)
        self._put(self._plan[index], particle, self._plan[index]["probe"][particle, vertex])
        self._written = (index, particle)

    def _candidates(self) -> list[Tensor]:
        total = sum(e["probe"].shape[0] * e["probe"].shape[1] for e in self._plan)
        params = self.active_params()
        out = {p: p.detach().unsqueeze(0).repeat(total, *([1] * p.ndim)) for p in params}
        for entry in self._plan:
            count, vertices = entry["probe"].shape[:2]
            for particle in range(count):
                for p, start, stop, offset in entry["layout"].pieces(particle):
                    rows = slice(entry["first"] + particle * vertices,
                                 entry["first"] + (particle + 1) * vertices)  # fmt: skip
                    values = entry["probe"][particle, :, offset : offset + stop - start]
                    out[p][rows].view(vertices, -1)[:, start:stop] = values.to(p.dtype)
        return [out[p] for p in params]

    def _tell(self, losses: Tensor) -> None:
        for entry in self._plan:
            group = entry["group"]
            count, vertices = entry["probe"].shape[:2]
            cost = losses[entry["first"] : entry["first"] + count * vertices].reshape(count, -1)
            epsilon = group["lr"]
            if epsilon == 0 or group["step_radius"] == 0:
                continue
            finite = torch.isfinite(cost)
            shifted = cost - torch.where(finite, cost, math.inf).amin(1, keepdim=True)
            logits = torch.where(finite, -shifted / (epsilon * group["scale_cost"]), -math.inf)
            weights = torch.softmax(logits, dim=1)
            # a particle whose every probe failed stays where it is
            weights = torch.where(finite.any(1, keepdim=True), weights, 0.0)
            move = torch.einsum("pv,pvi->pi", weights, entry["rotated"])
            new = (entry["centre"] + move * (group["step_radius"] * epsilon)).reshape(-1)
            layout = entry["layout"]
            for p, start, stop in zip(
                layout.params, layout.bounds, layout.bounds[1:], strict=False
            ):
                p.copy_(new[start:stop].reshape(p.shape).to(p.device, p.dtype))
        self._plan = []
