"""Projectors: which subspace of a matrix gradient the inner rule sees.

Every projector works on the *oriented* gradient ``M`` of shape ``(short, long)``: the matrix
gradient itself when it has fewer rows than columns (GaLore's left projection, ``P^T G``), its
transpose otherwise (GaLore's right projection, ``G Q``). A projector keeps its subspace in the
optimizer state as tensors and plain values only (a basis, or column indices), so a checkpoint
loads with ``torch.load(weights_only=True)``; random projectors are seeded from
``(seed, position in the param group, refresh count)``, so a refresh is a pure function of the
saved state and the gradient.

``refresh(M, state, rank, context)`` chooses the subspace; ``down(M, state)`` gives the
``(k, long)`` coordinates of ``M`` in it; ``up(R, state, short)`` maps coordinates back to
``(short, long)``. ``state_bytes(short, long, rank, context)`` is what ``refresh`` stores, for
the registry's state-bytes functions.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class RefreshContext:
    """What a projector may use besides the gradient: the group's ``seed``, the tensor's
    position among the group's projected tensors (``index`` of ``count``), how many refreshes
    this tensor has had before (``refresh``), and the group's ``density`` (blockwise only)."""

    seed: int
    index: int
    count: int
    refresh: int
    density: float | None = None


def derived_seed(*parts: int) -> int:
    """A 63-bit seed hashed (BLAKE2b) from integers, so nearby inputs give unrelated streams."""
    digest = hashlib.blake2b(":".join(str(int(p)) for p in parts).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)


def seeded_generator(device: torch.device, *parts: int) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derived_seed(*parts))
    return generator


class Projector(Protocol):
    name: str

    def refresh(self, m: Tensor, state: dict[str, Any], rank: int, ctx: RefreshContext): ...

    def down(self, m: Tensor, state: dict[str, Any]) -> Tensor: ...

    def up(self, r: Tensor, state: dict[str, Any], short: int) -> Tensor: ...

    def state_bytes(self, short: int, long: int, rank: int, ctx: RefreshContext) -> int: ...


def _fix_signs(basis: Tensor) -> Tensor:
    """Flip each column so that its largest-magnitude entry is positive: singular vectors are
    defined up to sign, and a fixed convention keeps float32 and float64 runs (and LAPACK
    builds) on the same basis. Projections ``Q Q^T`` are unchanged."""
    pivots = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True))
    return basis * torch.where(pivots < 0, -1.0, 1.0).to(basis.dtype)


class BasisProjector:
    """Shared mechanics of projectors that store an orthonormal basis ``Q`` (short x rank)."""

    name = "basis"
    key = "projector_basis"

    def basis(self, m: Tensor, rank: int, ctx: RefreshContext) -> Tensor:
        raise NotImplementedError

    def refresh(self, m, state, rank, ctx):
        state[self.key] = self.basis(m, rank, ctx).to(m.dtype).contiguous()

    def down(self, m, state):
        return state[self.key].T @ m

    def up(self, r, state, short):
        return state[self.key] @ r

    def state_bytes(self, short, long, rank, ctx):
        return 4 * short * rank


class SVDProjector(BasisProjector):
    """GaLore's projector: the top-``rank`` left singular vectors of ``M`` (a full SVD)."""

    name = "svd"

    def basis(self, m, rank, ctx):
        u, _, _ = torch.linalg.svd(m, full_matrices=False)
        return _fix_signs(u[:, :rank])


class RandomizedSVDProjector(BasisProjector):
    """Top-``rank`` left singular vectors estimated by a randomized range finder (Halko,
    Martinsson & Tropp 2011): ``oversampling`` extra columns and ``power_iterations`` rounds of
    subspace iteration on a seeded Gaussian sketch, then an exact SVD of the small
    ``(rank + oversampling) x long`` matrix."""

    name = "randomized_svd"

    def __init__(self, oversampling: int = 8, power_iterations: int = 2) -> None:
        self.oversampling = oversampling
        self.power_iterations = power_iterations

    def basis(self, m, rank, ctx):
        short, long = m.shape
        width = min(short, rank + self.oversampling)
        generator = seeded_generator(m.device, ctx.seed, ctx.index, ctx.refresh, 1)
        sketch = torch.randn(long, width, generator=generator, device=m.device, dtype=m.dtype)
        q, _ = torch.linalg.qr(m @ sketch)
        for _ in range(self.power_iterations):
            q, _ = torch.linalg.qr(m.T @ q)
            q, _ = torch.linalg.qr(m @ q)
        u_small, _, _ = torch.linalg.svd(q.T @ m, full_matrices=False)
        return _fix_signs(q @ u_small[:, :rank])


class RandomProjector(BasisProjector):
    """A random orthonormal basis (QR of a seeded Gaussian), independent of the gradient."""

    name = "random"

    def basis(self, m, rank, ctx):
        generator = seeded_generator(m.device, ctx.seed, ctx.index, ctx.refresh, 2)
        gaussian = torch.randn(m.shape[0], rank, generator=generator, device=m.device)
        q, _ = torch.linalg.qr(gaussian.to(m.dtype))
        return q


@lru_cache(maxsize=32)
def dct_basis(n: int, dtype: torch.dtype, device: str) -> Tensor:
    """The orthonormal DCT matrix ``C[k, j] = sqrt(2/n) c_k cos(pi k (2j + 1) / (2n))`` with
    ``c_0 = 1/sqrt(2)``, ``c_k = 1`` otherwise; its columns are the candidate basis vectors (as
    in the SVD-free paper's code). Built in float64, cached per size, dtype and device."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(n, dtype=torch.float64)[None, :]
    c = math.sqrt(2.0 / n) * torch.cos(math.pi * k * (2 * j + 1) / (2 * n))
    c[0] *= math.sqrt(0.5)
    return c.to(dtype=dtype, device=device)


class DCTProjector:
    """The SVD-free projector: a fixed orthonormal DCT basis of the short side; a refresh
    scores every basis column by its alignment with the gradient, the l1 norm of
    ``C[:, j]^T M`` (one matrix product), and keeps the top ``rank`` columns. Only their
    indices are stored (int32)."""

    name = "dct"
    key = "projector_indices"

    def _columns(self, short: int, like: Tensor, state: dict[str, Any]) -> Tensor:
        basis = dct_basis(short, like.dtype, str(like.device))
        return basis[:, state[self.key].long()]

    def refresh(self, m, state, rank, ctx):
        basis = dct_basis(m.shape[0], m.dtype, str(m.device))
        scores = (basis.T @ m).abs().sum(dim=1)
        indices = torch.topk(scores, rank, sorted=True).indices
        state[self.key] = indices.to(torch.int32)

    def down(self, m, state):
        return self._columns(m.shape[0], m, state).T @ m

    def up(self, r, state, short):
        return self._columns(short, r, state) @ r

    def state_bytes(self, short, long, rank, ctx):
        return 4 * rank


def active_blocks(seed: int, refresh: int, count: int, density: float) -> set[int]:
    """Positions (among a group's ``count`` projected tensors) that the blockwise projector
    makes active at refresh number ``refresh``: the first ``round(density * count)`` of a
    permutation seeded from ``(seed, refresh)``, as FRUGAL's random block order."""
    generator = torch.Generator().manual_seed(derived_seed(seed, refresh, 3))
    order = torch.randperm(count, generator=generator)
    return set(order[: round(density * count)].tolist())


class BlockwiseProjector:
    """FRUGAL's blockwise selection (after BAdam): whole tensors are in the subspace or not. At
    each refresh a seeded random ``density`` fraction of the group's projected tensors becomes
    active (the inner rule sees the full gradient); the others are entirely residual."""

    name = "blockwise"
    key = "block_active"

    def refresh(self, m, state, rank, ctx):
        state[self.key] = ctx.index in active_blocks(ctx.seed, ctx.refresh, ctx.count, ctx.density)

    def down(self, m, state):
        return m if state[self.key] else m[:0]

    def up(self, r, state, short):
        return r

    def state_bytes(self, short, long, rank, ctx):
        return 0


def up_into(projector: Any, r: Tensor, state: dict[str, Any], like: Tensor) -> Tensor:
    """``projector.up(r)`` as a full ``(short, long)`` matrix (zeros for an empty subspace)."""
    if r.shape[0] == 0:
        return torch.zeros_like(like)
    return projector.up(r, state, like.shape[0])


PROJECTORS: dict[str, Any] = {
    "svd": SVDProjector(),
    "randomized_svd": RandomizedSVDProjector(),
    "dct": DCTProjector(),
    "random": RandomProjector(),
    "blockwise": BlockwiseProjector(),
}
