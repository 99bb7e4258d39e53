"""PolyStep: probe a rotated polytope around each block of coordinates, move to the softmax
barycentre of its vertices (a one-sided entropic optimal-transport step)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from optzoo._core.optimizer import NonfinitePolicy, ParamsT, state_dtype
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, check_choice, check_value
from optzoo.gradient_free.base import COUNT, LossValueOptimizer
from optzoo.registry import register

Polytope = Literal["simplex", "orthoplex"]
Rotation = Literal["displacement", "random"]


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


def random_basis(
    rows: int,
    cols: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    leading: Tensor | None = None,
) -> Tensor:
    """A ``(rows, cols)`` matrix of ``dtype`` with orthonormal columns: the QR (signs fixed so R
    has a positive diagonal) of ``leading``'s columns followed by Gaussian ones. Without
    ``leading``, a Haar-random ``cols``-dimensional subspace of R^rows."""
    fill = cols - (0 if leading is None else leading.shape[1])
    gaussian = torch.randn(rows, fill, generator=generator, dtype=dtype)
    if leading is not None:
        gaussian = torch.cat([leading.to(dtype), gaussian], 1)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r))


def top_directions(history: Tensor, k: int) -> Tensor | None:
    """The (at most ``k``) leading left singular vectors of the columns of ``history`` (n x h),
    unit norm, float64, from the eigenvectors of the small h x h Gram matrix; directions whose
    squared singular value is below the float rounding of ``history`` are dropped. None if
    nothing is left."""
    h = history.shape[1]
    if h == 0 or not bool(torch.isfinite(history).all()) or float(history.norm()) < 1e-10:
        return None
    tol = max(h * torch.finfo(torch.float64).eps, (h * torch.finfo(history.dtype).eps) ** 2)
    history = history.double()
    w, v = torch.linalg.eigh(history.T @ history)  # ascending
    keep = min(k, int((w > w[-1] * tol).sum()))
    return history @ (v[:, h - keep :].flip(1) * w[h - keep :].flip(0).rsqrt())


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

    def spans(self) -> list[tuple[Tensor, int, int]]:
        """(parameter, start, stop) of every parameter in the flat vector."""
        return list(zip(self.params, self.bounds, self.bounds[1:], strict=False))

    def write(self, flat: Tensor) -> None:
        """Copy the flat vector ``flat`` (padding past the end ignored) into the parameters."""
        for p, start, stop in self.spans():
            p.copy_(flat[start:stop].reshape(p.shape).to(p.device, p.dtype))


@register(
    family="gradient_free",
    paper="Training Non-Differentiable Networks via Optimal Transport",
    year=2026,
    oracle="loss_closure",
    state_bytes_per_param=0,  # full space (default); subspace_dim: 20 (5 displacements)
    needs_closure=True,
    reference_problem="quadratic",
    convergence=(25, 1.0),
    test_hyperparameters={"lr": 0.3},
    invalid_hyperparameters=(({"subspace_dim": 0}, "subspace_dim"),
                             ({"subspace_dim": 2.5}, "subspace_dim"),
                             ({"subspace_rotation": "svd"}, "subspace_rotation")),
)  # fmt: skip
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

    Subspace mode (``subspace_dim=d``; the package's compressed random subspace,
    ``AdaptiveSubspace``): every step draws a fresh d-dimensional subspace of the group's n
    parameters, an orthonormal basis B (n x d), and runs the step above on the coordinates z of
    x + B z, from z = 0, cut into particles z_i of ``subspace_particle_dim`` coordinates (B_i:
    their columns of B)::

        C_iv = f(x + B_i r_probe R_i s_v / 2),   x <- x + sum_i B_i sum_v w_iv r_step R_i s_v

    B is the QR of [U, G]: G Gaussian, U (``subspace_rotation="displacement"``, the package's
    default) the top k left singular vectors of the last 5 displacements x_t - x_{t-1} (at
    most 5 of them), k = max(1, floor(d min(t, 50) / 100)) at step t > 0, so the directions
    that moved recently are probed again (first particle); with ``"random"`` (or at t = 0) B
    is Haar-random. The displacements are state: 5 n numbers (20 bytes per float32 parameter).

    A step then costs ceil(d / subspace_particle_dim) * V evaluations whatever n is (270 for
    d = 240 and the 8-D simplex), plus drawing B (a QR of n x d, in float32 as the package does
    for float32 models, float64 for float64 parameters) and building the candidates (about
    2.1 d n numbers, float64), so d should stay well below n. d above n is clamped to n.

    Defaults are those of the authors' package ``polystep`` (PolyStepOptimizer): simplex,
    particle_dim 2, epsilon 0.1, step_radius 1, probe_radius 2 (one probe, at half of it),
    scale_cost 1, and in subspace mode subspace_particle_dim 8 with the softmax plan (the
    solver it picks for subspaces), and its AdaptiveSubspace rotation: a new basis every step,
    history of 5, SVD share ramped from 0 to 1/2 over 50 steps. The package leaves d to the
    user (its ``AdaptiveSubspace.auto_from_params`` takes 5% of n clamped to [64, 4096]: 240
    for a 4.8k-parameter network); ``subspace_dim=None`` (default) is the full-space mode, the
    package's default too (``subspace=None``). Deviations: the package solves the full-space
    plan with Sinkhorn by default, here the plan is always the softmax the paper describes; its
    stagnation reset of the subspace (20 steps of relative change below 1e-4) is left out.
    Not implemented: the per-layer and factored subspaces, sparse projections, momentum,
    adaptive radii and probe jitter of the package. Full space keeps no state beyond the seeded
    generator.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "particle_dim": COUNT,
        "step_radius": NON_NEGATIVE,
        "probe_radius": POSITIVE,
        "scale_cost": POSITIVE,
        "subspace_particle_dim": COUNT,
    }
    subspace_history = 5  # displacements remembered
    svd_share, svd_ramp_steps = 0.5, 50  # (the package's AdaptiveSubspace defaults)

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.1,
        particle_dim: int = 2,
        polytope: Polytope = "simplex",
        step_radius: float = 1.0,
        probe_radius: float = 2.0,
        scale_cost: float = 1.0,
        subspace_dim: int | None = None,
        subspace_particle_dim: int = 8,
        subspace_rotation: Rotation = "displacement",
        *,
        seed: int = 0,
        max_evaluations: int | None = None,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_choice("polytope", polytope, ("simplex", "orthoplex"))
        check_choice("subspace_rotation", subspace_rotation, ("displacement", "random"))
        defaults = {
            "lr": lr,
            "particle_dim": particle_dim,
            "polytope": polytope,
            "step_radius": step_radius,
            "probe_radius": probe_radius,
            "scale_cost": scale_cost,
            "subspace_dim": subspace_dim,
            "subspace_particle_dim": subspace_particle_dim,
            "subspace_rotation": subspace_rotation,
        }
        super().__init__(
            params, defaults, seed=seed, max_evaluations=max_evaluations, on_nonfinite=on_nonfinite
        )
        self._plan: list[dict[str, Any]] = []
        self._written: tuple[int, int] | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        subspace_dim = param_group.get("subspace_dim", self.defaults["subspace_dim"])
        if subspace_dim is not None:  # None (full space) or a positive integer
            check_value("subspace_dim", subspace_dim, COUNT)
        rotation = param_group.get("subspace_rotation", self.defaults["subspace_rotation"])
        check_choice("subspace_rotation", rotation, ("displacement", "random"))
        super().add_param_group(param_group)

    # -- geometry of one step -------------------------------------------------------------------
    def _ask(self) -> int:
        self._plan = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                continue
            flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in params])
            n, subspace = flat.numel(), group["subspace_dim"]
            block = group["particle_dim"] if subspace is None else group["subspace_particle_dim"]
            dim = n if subspace is None else min(int(subspace), n)
            count = math.ceil(dim / block)
            basis = None  # subspace: zero columns pad the last particle, padding moves nothing
            if subspace is not None:
                basis = self._basis(group, params, dim)
                basis = torch.nn.functional.pad(basis, (0, count * block - dim))
            vertices = (simplex_vertices if group["polytope"] == "simplex" else orthoplex_vertices)(
                block
            )
            rotated = torch.einsum(
                "pij,vj->pvi", random_rotations(count, block, self.generator), vertices
            )
            offset = rotated * (group["probe_radius"] * group["lr"] / 2)
            if basis is None:  # centre: the particles (count, block); probe: their probe points
                centre = torch.nn.functional.pad(flat, (0, count * block - n)).reshape(count, block)
                probe = centre.unsqueeze(1) + offset
            else:  # centre: the flat vector x; probe: every candidate x + B_i offset_iv
                centre = flat
                probe = flat + torch.einsum("npi,pvi->pvn", basis.view(n, count, block), offset)
            self._plan.append(
                {"group": group, "layout": _Block(params, block), "centre": centre,
                 "basis": basis, "rotated": rotated, "probe": probe, "first": 0}
            )  # fmt: skip
        total = 0
        for entry in self._plan:
            entry["first"] = total
            total += entry["probe"].shape[0] * entry["probe"].shape[1]
        return total

    def _basis(self, group: dict[str, Any], params: list[Tensor], dim: int) -> Tensor:
        """This step's subspace basis (n x dim, float64), drawn in float32 (as the package
        does for a float32 model) unless a parameter is float64."""
        n = sum(p.numel() for p in params)
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        leading = None
        if group["subspace_rotation"] == "displacement":
            states = [self.state[p] for p in params]
            for p, state in zip(params, states, strict=True):
                if "displacements" not in state:
                    state["subspace_step"] = 0
                    state["displacements"] = torch.zeros(
                        self.subspace_history, p.numel(), dtype=state_dtype(p), device=p.device
                    )
            t = states[0]["subspace_step"]
            if t > 0:
                rows = min(t, self.subspace_history)
                recent = torch.cat([s["displacements"][:rows].cpu() for s in states], 1)
                k = max(1, int(self.svd_share * min(1.0, t / self.svd_ramp_steps) * dim))
                leading = top_directions(recent.T, k)
        return random_basis(n, dim, self.generator, dtype, leading).double()

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
        """Write one particle's block (full space) or the whole flat vector (subspace)."""
        if entry["basis"] is not None:
            entry["layout"].write(values)
            return
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
            centre = entry["centre"] if entry["basis"] is not None else entry["centre"][particle]
            self._put(entry, particle, centre)
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
            if entry["basis"] is not None:
                rows = slice(entry["first"], entry["first"] + count * vertices)
                flat = entry["probe"].reshape(count * vertices, -1)
                for p, start, stop in entry["layout"].spans():
                    out[p][rows] = flat[:, start:stop].reshape(-1, *p.shape).to(p.dtype)
                continue
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
            move = move * (group["step_radius"] * epsilon)
            if entry["basis"] is None:
                new = (entry["centre"] + move).reshape(-1)
            else:
                new = entry["centre"] + entry["basis"] @ move.reshape(-1)
                if group["subspace_rotation"] == "displacement":
                    self._remember(entry["layout"], new - entry["centre"])
            entry["layout"].write(new)
        self._plan = []

    def _remember(self, layout: _Block, displacement: Tensor) -> None:
        """Store a subspace step's displacement in the circular history of its parameters."""
        for p, start, stop in layout.spans():
            state = self.state[p]
            rows = state["displacements"]
            rows[state["subspace_step"] % self.subspace_history] = displacement[start:stop].to(rows)
            state["subspace_step"] += 1
