"""Update rules as compositions of small per-tensor transforms (the optax idea, in torch).

A *transform* maps the current update direction of one tensor to a new one, possibly reading
and writing its own state buffers::

    transform(update, param, grad, state, hp) -> update

``chain(t1, t2, ...)`` turns transforms into a group rule for ``RuleOptimizer``: for each
tensor it feeds the gradient through the transforms and finishes with ``param -= lr * update``.
Named optimizers are chains (AdamW = Adam moments + decoupled weight decay; LAMB = AdamW + a
layer-wise trust ratio), so each piece is written once and users can build new combinations.

Transforms must work with hyperparameters given either as Python numbers (reference path) or
as 0-d tensors (compiled path): use arithmetic and ``torch.where``, not ``alpha=`` keywords or
Python ``if`` on values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from optzoo._core.cloops import generating

State = dict[str, Tensor]
LOW_PRECISION = (torch.float16, torch.bfloat16)


def widened(t: Tensor) -> Tensor:
    """``t`` in float32 if it is stored in a low-precision dtype (reductions need the bits)."""
    return t.float() if t.dtype in LOW_PRECISION else t


def keep_master_copy(param: Tensor, state: State) -> None:
    """For a low-precision parameter, keep a float32 ``master_param`` in its state: rules whose
    steps start far below bfloat16 resolution (DoG, Prodigy, SGLD noise) update that copy."""
    if param.dtype in LOW_PRECISION:
        state["master_param"] = param.detach().float()


def exact_param(param: Tensor, state: State) -> Tensor:
    """The parameter's exact value: its float32 master copy where one is kept."""
    return state.get("master_param", param)


class Transform(Protocol):
    buffers: tuple[str, ...]

    def __call__(
        self, update: Tensor, param: Tensor, grad: Tensor, state: State, hp: Mapping[str, Any]
    ) -> Tensor: ...


def add_scaled_(target: Tensor, source: Tensor, scale: Any) -> Tensor:
    """``target += scale * source`` in place, for a Python-number or 0-d-tensor ``scale``."""
    if isinstance(scale, int | float):
        return target.add_(source, alpha=scale)
    return target.add_(source * scale)


def ema_(average: Tensor, value: Tensor, beta: Any) -> Tensor:
    """``average = beta * average + (1 - beta) * value`` in place.

    Eager: one ``lerp_``. Compiled (0-d tensor ``beta``): multiply-add, because inductor
    decomposes a tensor-weighted lerp into a per-element select that makes the kernel
    compute-bound."""
    if isinstance(beta, int | float):
        return average.lerp_(value, 1 - beta)
    return average.mul_(beta).add_(value * (1 - beta))


# exp(r) for |r| <= ln(2) / 2 as its Taylor polynomial of degree 6 (truncation error
# (ln 2 / 2)^7 / 7! = 1.2e-7, about one float32 ulp), highest power first;
# ln 2 split in two (Cody and Waite) so that n * _LN2_HIGH is exact for |n| <= 128.
_EXP_TAYLOR = tuple(1 / math.factorial(k) for k in range(6, -1, -1))
_LN2_HIGH, _LN2_LOW = 0.693359375, math.log(2.0) - 0.693359375


def sigmoid(x: Tensor) -> Tensor:
    """``1 / (1 + exp(-x))``.

    Eager, and off the CPU or outside float32: ``torch.sigmoid``. Compiled (torch.compile or
    ``cloops``) for a float32 CPU tensor: ``exp(-x) = 2^n exp(r)`` with n = round(-x / ln 2),
    exp(r) a polynomial and 2^n built from its exponent bits, so the whole sigmoid is a few
    vector instructions inline in the loop. Inductor's ``exp`` is a call into SLEEF that
    spills every vector register around it: measured, it made diffGrad's fused step 2.3x
    fused AdamW, against 1.5x this way and 1.3x with no exponential at all. The polynomial is
    evaluated by Estrin's scheme (three levels of multiply-adds, not Horner's chain of six):
    each element's chain of dependent operations is what bounds diffGrad's C loop (its
    memory traffic alone takes 1.11 x fused AdamW), and Estrin's took it from 1.42-1.50 to
    1.33-1.38 in the same runs. Within 2.5 float32 ulps of the exact sigmoid where that is a
    normal number, 1.5 for x >= 0 (tested; ``torch.sigmoid`` is within 1.2); +-inf give 1
    and 0, NaN stays NaN."""
    compiled = torch.compiler.is_compiling() or generating()
    if not compiled or x.dtype != torch.float32 or x.device.type != "cpu":
        return torch.sigmoid(x)
    # exp(88.7) overflows float32 and 2^-126 is its smallest normal number: clamped there, n
    # stays in [-126, 128] (2^128 is the bit pattern of +inf, so x <= -88.7 gives 0) and
    # 1 + exp(-x) is 1 for x >= 87.3
    minus_x = -x.clamp(-88.7, 87.3)
    n = (minus_x * (1 / math.log(2.0))).round()
    r = minus_x - n * _LN2_HIGH - n * _LN2_LOW
    c6, c5, c4, c3, c2, c1, c0 = _EXP_TAYLOR
    r2 = r * r
    exp_r = (c0 + c1 * r + (c2 + c3 * r) * r2) + ((c4 + c5 * r) + c6 * r2) * (r2 * r2)
    two_to_n = ((n.to(torch.int32) + 127) << 23).view(torch.float32)
    return 1 / (1 + exp_r * two_to_n)


# One more than the longest reduction that inductor unrolls into the loop that consumes it
# (``torch._inductor.config.unroll_reductions_threshold``).
UNROLLED = 9


def realized(scalar: Tensor) -> Tensor:
    """``scalar`` (0-d, or a vector of per-tensor scalars) unchanged, computed once rather
    than per element when compiled.

    Inductor inlines a 0-d value into every loop that consumes it, so a scalar made of norms,
    square roots and divisions would be recomputed once per vector of elements; the output of
    a reduction is stored instead: a max over ``UNROLLED`` broadcast copies, a reduction that
    inductor neither unrolls nor folds away, and that needs no buffer per copy (a ``stack``
    of copies made 9 buffer views per scalar in the compiled call's Python wrapper: LARS's
    40 biases took 1.1 ms a step that way, 0.3 ms this way)."""
    if not torch.compiler.is_compiling():
        return scalar
    return scalar.expand(UNROLLED, *scalar.shape).amax(0)


def squared_norm(t: Tensor) -> Tensor:
    """``||t||^2`` (low-precision tensors widened first)."""
    return widened(t).square().sum()


# Quarters of a tensor summed side by side: one loop then reads four streams of memory (one
# stream is latency-bound on a CPU core: a sum of squares measured 15 against 8-10 GB/s).
STREAMS = 4


def _squared_norm_streamed(t: Tensor) -> Tensor:
    flat = widened(t).reshape(-1)
    if flat.numel() < 1 << 16 or flat.numel() % STREAMS:
        return flat.square().sum()
    quarters = flat.view(STREAMS, -1)
    total = quarters[0].square()
    for quarter in quarters[1:]:
        total = total + quarter.square()
    return total.sum()


def sum_of_squares(tensors: list[Tensor]) -> Tensor:
    """``sum_i ||t_i||^2`` over a list of tensors, in float64 for the scalar arithmetic that
    follows. Each large tensor is summed as four interleaved streams, for group norms computed
    in a phase of their own (AdaGrad-Norm's, DoG's: 1.18 and 1.96 x fused AdamW, against
    1.24-1.33 and 2.57-2.73 one stream at a time). Not for norms fused into an update loop:
    LAMB's and LARS's trust ratios (``squared_norm``) measured 1.5x slower that way."""
    return torch.stack([_squared_norm_streamed(t).double() for t in tensors]).sum()


def add_product_(target: Tensor, a: Tensor, b: Tensor, scale: Any) -> Tensor:
    """``target += scale * a * b`` in place, for a Python-number or 0-d-tensor ``scale``."""
    if isinstance(scale, int | float):
        return target.addcmul_(a, b, value=scale)
    return target.addcmul_(a, b * scale)


class Chain:
    """A group rule: per tensor, ``update = t_k(...t_1(grad))``; then ``param -= lr * update``.

    A transform that needs per-tensor scalars (e.g. bias corrections) defines
    ``scalars(state, hp) -> dict``; they are computed in the rule's ``prepare`` phase and
    visible to the transform in ``state`` (use keys prefixed by the transform's name).
    ``scalars`` reads only 0-d state (such as ``step``) with elementwise ops: it is called
    once per group or chunk, with each 0-d state entry stacked into a vector over tensors."""

    def __init__(self, *transforms: Transform, name: str = "chain") -> None:
        buffers: list[str] = []
        for t in transforms:
            for b in t.buffers:
                if b in buffers or b == "step":
                    raise ValueError(f"state buffer {b!r} is used by two transforms in {name}")
                buffers.append(b)
        self.transforms = transforms
        self.buffers = tuple(buffers)
        self.__name__ = name
        # Every scalar of a chain comes from its own tensor (bias corrections from its step, a
        # trust ratio from its own norms): both phases run in one compiled graph per chunk of
        # tensors.
        self.per_tensor = True
        # A chain with a norm of the update reads each tensor twice (dry run, then update):
        # compiled, the chunk's tensors then run one after another, each update straight
        # after its own norms, while the tensor is still in the last-level cache (see
        # ``optimizer.compiled_phase``).
        self.tensor_by_tensor = any(hasattr(t, "scalar_from_update") for t in transforms)

    def prepare(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[State],
        group_state: State,
        hp: dict[str, Any],
    ) -> list[State]:
        scalars: list[State] = [{} for _ in states]
        with_scalars = [t for t in self.transforms if hasattr(t, "scalars")]
        if with_scalars and states:
            # Computed once for all tensors, from their 0-d state stacked into vectors: one
            # small kernel and buffer per scalar, not per tensor and scalar (measured: 40
            # biases' bias corrections cost 1.5 ms a step one by one, compiled).
            stacked = {
                k: torch.stack([s[k] for s in states]) for k, v in states[0].items() if v.ndim == 0
            }
            for t in with_scalars:
                for key, value in t.scalars(stacked, hp).items():
                    value = realized(value)
                    for i, c in enumerate(scalars):
                        c[key] = value[i]
        for index, t in enumerate(self.transforms):
            if hasattr(t, "scalar_from_update"):
                self._dry_run(index, params, grads, states, hp, scalars)
        return scalars

    def _dry_run(self, index, params, grads, states, hp, scalars) -> None:
        """For a transform that needs a reduction over the incoming update (a trust ratio's
        norm): compute that update on copies of the state, so the state is not written twice.
        Compiled, the copies are never stored: the update is recomputed inside the norm's
        loop, and again in the update's loop (no full-size temporary: one made LAMB 5x slower
        than AdamW)."""
        prefix, t = self.transforms[:index], self.transforms[index]
        for p, g, s, c in zip(params, grads, states, scalars, strict=True):
            p, g = widened(p), widened(g)  # as the elementwise phase sees them
            view = {k: v.clone() if v.ndim else v for k, v in s.items()} | c
            u = g
            for earlier in prefix:
                u = earlier(u, p, g, view, hp)
            c.update(t.scalar_from_update(u, p, hp))

    def __call__(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[State],
        group_state: State,
        hp: dict[str, Any],
        scalars: list[State],
    ) -> None:
        for p, g, s, c in zip(params, grads, states, scalars, strict=True):
            view = {**s, **c} if c else s
            u = g
            for t in self.transforms:
                u = t(u, p, g, view, hp)
            add_scaled_(p, u, -hp["lr"])


def bias_correction(beta: Any, step: Tensor) -> Tensor:
    """1 - beta^t in float64: in float32, 1 - 0.999^1 is already off by 1e-5 relative."""
    return 1 - beta ** step.double()


def chain(*transforms: Transform, name: str = "chain") -> Chain:
    return Chain(*transforms, name=name)


# --------------------------------------------------------------------------------------------
# Shared transforms
# --------------------------------------------------------------------------------------------


class ScaleByAdam:
    """Adam's preconditioned direction  m_hat / (sqrt(v_hat) + eps)  with bias correction.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  v_hat = v / (1 - b2^t).
    ``nesterov=False``: m_hat = m / (1 - b1^t) (Adam, Kingma & Ba 2015).
    ``nesterov=True``:  m_hat = (b1 m + (1 - b1) g) / (1 - b1^t), the NAdam form used by the
    AlgoPerf NAdamW baseline (Dozat 2016).
    Hyperparameters: ``betas``, ``eps``.
    """

    buffers = ("exp_avg", "exp_avg_sq")

    def __init__(self, nesterov: bool = False, bias_correction: bool = True) -> None:
        self.nesterov = nesterov
        self.bias_correction = bias_correction

    def scalars(self, state, hp):
        if not self.bias_correction:
            return {}
        beta1, beta2 = hp["betas"]
        return {
            "adam_inverse_bc1": 1 / bias_correction(beta1, state["step"]),
            "adam_inverse_sqrt_bc2": bias_correction(beta2, state["step"]).rsqrt(),
        }

    def __call__(self, update, param, grad, state, hp):
        beta1, beta2 = hp["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        ema_(m, update, beta1)
        add_product_(v.mul_(beta2), update, update, 1 - beta2)
        numerator = m * beta1 + update * (1 - beta1) if self.nesterov else m
        if not self.bias_correction:
            return numerator / (v.sqrt() + hp["eps"])
        # scalar factors from `scalars`: one sqrt and one division per element
        numerator = numerator * state["adam_inverse_bc1"]
        return numerator / (v.sqrt() * state["adam_inverse_sqrt_bc2"] + hp["eps"])


class AddDecayedWeights:
    """update + weight_decay * param. After a preconditioner this is decoupled weight decay
    (AdamW, Loshchilov & Hutter 2019); before it, it is an L2 penalty. Hyperparameter:
    ``weight_decay``."""

    buffers = ()

    def __call__(self, update, param, grad, state, hp):
        return update + hp["weight_decay"] * param


class Momentum:
    """Heavy-ball / EMA momentum:  b = mu b + (1 - dampening) u;  returns b, or for Nesterov
    u + mu b. Hyperparameters: ``momentum`` and ``dampening``."""

    buffers = ("momentum_buffer",)

    def __init__(self, nesterov: bool = False) -> None:
        self.nesterov = nesterov

    def __call__(self, update, param, grad, state, hp):
        mu = hp["momentum"]
        buf = state["momentum_buffer"]
        buf.mul_(mu)
        add_scaled_(buf, update, 1 - hp["dampening"])
        return update + mu * buf if self.nesterov else buf


class TrustRatio:
    """Layer-wise trust ratio (LARS / LAMB):  update * trust_coefficient * ||param|| / ||update||,
    taken as 1 where either norm is zero; skipped for groups with ``trust_ratio=False``
    (commonly biases and normalisation weights). Hyperparameter: ``trust_coefficient``."""

    buffers = ()

    def scalar_from_update(self, update, param, hp) -> dict[str, Tensor]:
        """The ratio, computed in the rule's ``prepare`` from a dry run of the update."""
        if not hp.get("trust_ratio", True):
            return {}
        w_norm = squared_norm(param).sqrt()
        u_norm = squared_norm(update).sqrt()
        ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
        return {"trust_ratio": realized(ratio * hp.get("trust_coefficient", 1.0))}

    def __call__(self, update, param, grad, state, hp):
        if not hp.get("trust_ratio", True):
            return update
        return update * state["trust_ratio"]
