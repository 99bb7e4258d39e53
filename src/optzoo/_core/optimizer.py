"""Base classes every gradient-based optimizer in optzoo builds on.

``ZooOptimizer`` is a ``torch.optim.Optimizer`` that adds what the contract (DESIGN.md section 4)
asks of every algorithm: declarative hyperparameter validation for the constructor and every
param group, clear errors for complex parameters and sparse gradients, a documented policy for
non-finite gradients or losses, and a ``load_state_dict`` that keeps the state's dtype (torch's
casts every floating state tensor to the parameter's dtype, which would silently round float32
moments of a bfloat16 model).

``RuleOptimizer`` runs an update *rule* (see ``optzoo._core.rules``) over each param group. The
rule is written once, as plain per-tensor torch code; the same function is either run eagerly
(the readable reference) or compiled (the fast path): on the CPU, where ``cloops`` can write
the rule as C loops, as those; otherwise by ``torch.compile`` into fused kernels. Which one
runs is chosen by device and size (``implementation="auto"``), by the constructor, or by the
``OPTZOO_IMPLEMENTATION`` environment variable.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from optzoo._core import cloops
from optzoo._core.rules import LOW_PRECISION
from optzoo._core.validation import Interval, check_choice, check_hyperparameters

NonfinitePolicy = Literal["skip", "raise", "ignore"]
Implementation = Literal["auto", "reference", "compiled"]
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

# Below this many elements in a param group the eager per-tensor loop costs less than a
# compiled call plus its one-time compile, so "auto" keeps the reference on CPU.
AUTO_COMPILE_MIN_NUMEL = 1 << 20
# On the CPU, rules that ``cloops`` can write as C loops run as those rather than through
# torch.compile (``OPTZOO_C_LOOPS=0`` turns this off, to compare the two).
C_LOOPS = os.environ.get("OPTZOO_C_LOOPS", "1") != "0"


def state_dtype(param: Tensor) -> torch.dtype:
    """Optimizer state is float32 for low-precision parameters, else the parameter's dtype."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


class ZooOptimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` plus optzoo's contract.

    Subclasses declare ``hyperparameter_ranges`` and implement ``_update_group``.

    Non-finite handling (``on_nonfinite``): ``"skip"`` (default) checks the loss returned by the
    closure and every gradient; if any is NaN or infinite, no parameter or state is touched and
    ``skipped_steps`` is incremented (it is saved in ``state_dict``). ``"raise"`` raises
    ``FloatingPointError`` instead. ``"ignore"`` skips the check (one read of the gradients and
    one host sync per step) and applies the update whatever it holds.
    """

    hyperparameter_ranges: ClassVar[Mapping[str, Interval]] = {}
    supports_complex: ClassVar[bool] = False

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        check_choice("on_nonfinite", on_nonfinite, ("skip", "raise", "ignore"))
        check_hyperparameters(self.hyperparameter_ranges, defaults)
        self.on_nonfinite: NonfinitePolicy = on_nonfinite
        self._skipped: int | Tensor = 0
        # During a step whose non-finite check is fused into the update (see ``step``): the
        # 0-d bool "every gradient and the loss are finite", else None; and whether the
        # update still has to check the gradients itself (see ``_update_checks_gradients``).
        self._finite: Tensor | None = None
        self._check_in_update = False
        super().__init__(params, defaults)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because the loss or a gradient was NaN or infinite."""
        return int(self._skipped)

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self._skipped = int(value)

    # -- construction -------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            check_hyperparameters(self.hyperparameter_ranges, group)
            for p in group["params"]:
                if p.is_complex() and not self.supports_complex:
                    raise ValueError(
                        f"{type(self).__name__} does not support complex parameters "
                        f"(got one of dtype {p.dtype}); optimize its real view instead"
                    )
                if not (p.is_floating_point() or p.is_complex()):
                    raise ValueError(
                        f"{type(self).__name__} can only optimize floating-point parameters, "
                        f"got dtype {p.dtype}"
                    )
        except ValueError:
            self.param_groups.pop()
            raise

    # -- step ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if params:
                work.append((group, params, [p.grad for p in params]))
        if self.on_nonfinite == "skip" and work and self._fuses_nonfinite_check(work):
            # No host sync: a fused reduction computes the flag on the device, and the update
            # kernels keep every old value where it is false (see ``RuleOptimizer``).
            if isinstance(loss, float | int) and not math.isfinite(loss):
                self._skipped = self._skipped + 1
                return loss
            grads = [g for _, _, gs in work for g in gs]
            # The update itself may check the gradients (``RuleOptimizer``'s gradient_check):
            # then only the loss is checked here, and the update ANDs in the rest.
            self._check_in_update = self._update_checks_gradients(work)
            if self._check_in_update:
                finite = torch.ones((), dtype=torch.bool, device=grads[0].device)
                if isinstance(loss, Tensor):
                    finite = finite & loss.detach().isfinite().all().to(finite.device)
            else:
                try:
                    finite = finite_flag(loss, grads)
                except Exception:  # no working compiler after all: the same check, eagerly
                    finite = _finite_flag(loss if isinstance(loss, Tensor) else None, grads)
            self._finite = finite
            try:
                for group, params, grads in work:
                    self._update_group(group, params, grads)
                self._skipped = self._skipped + (~self._finite).to(torch.int64)
            finally:
                self._finite = None
                self._check_in_update = False
            return loss
        if self.on_nonfinite != "ignore" and not _all_finite(loss, work):
            if self.on_nonfinite == "raise":
                raise FloatingPointError(
                    f"{type(self).__name__}: non-finite loss or gradient; no update was applied"
                )
            self._skipped = self._skipped + 1
            return loss
        for group, params, grads in work:
            self._update_group(group, params, grads)
        return loss

    def _fuses_nonfinite_check(self, work: list[tuple[dict, list[Tensor], list[Tensor]]]) -> bool:
        """Whether this step's updates can take the non-finite flag as a device tensor and
        mask themselves (no subclass does by default)."""
        return False

    def _update_checks_gradients(self, work: list[tuple[dict, list[Tensor], list[Tensor]]]):
        """Whether this step's (fused) update finds non-finite gradients by itself, folding
        them into ``self._finite`` before it writes anything (no subclass does by default)."""
        return False

    def _update_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]):
        raise NotImplementedError

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["optzoo"] = {"skipped_steps": self.skipped_steps}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # torch casts floating state to the parameter's dtype; restore the saved dtypes.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for param_id, p in zip(saved_ids, params, strict=True):
            for key, value in state_dict["state"].get(param_id, {}).items():
                if isinstance(value, Tensor):
                    self.state[p][key] = value.to(device=p.device, copy=True)
        self.skipped_steps = int(state_dict.get("optzoo", {}).get("skipped_steps", 0))


def _finite_flag(loss: Tensor | None, grads: list[Tensor]) -> Tensor:
    # The largest magnitude is finite exactly when every element is (max propagates NaN).
    # Same-shaped gradients are reduced together, in one loop over several streams of reads
    # (one stream is latency-bound on a CPU core: measured 10 against 15 GB/s for eight).
    extremes = []
    for ids in _chunks(grads):
        if len({grads[i].shape for i in ids}) > 1:  # a run of small tensors
            extremes += [grads[i].abs().amax().float() for i in ids]
            continue
        largest = grads[ids[0]].abs()
        for i in ids[1:]:
            largest = torch.maximum(largest, grads[i].abs())
        extremes.append(largest.amax().float())
    if loss is not None:
        extremes.append(loss.detach().abs().amax().float())
    return torch.stack(extremes).isfinite().all()


def finite_flag(loss: Any, grads: list[Tensor]) -> Tensor:
    """0-d bool tensor on the gradients' device: the loss (if a tensor) and every gradient are
    finite. One read of the gradients: on the CPU a C loop (``cloops.all_finite``), else
    compiled per set of shapes, with no host sync."""
    loss = loss if isinstance(loss, Tensor) else None
    if C_LOOPS and grads[0].device.type == "cpu":
        # on the CPU a host-side answer costs no sync: one vectorised C read of the gradients
        finite = cloops.all_finite(grads)
        if finite is not None:
            finite = finite and (loss is None or bool(loss.detach().isfinite().all()))
            return torch.tensor(finite, device=grads[0].device)
    signature = (
        tuple((tuple(g.shape), g.dtype, g.device.type) for g in grads),
        None if loss is None else (tuple(loss.shape), loss.dtype, loss.device.type),
    )
    return _compiled(_finite_flag, signature)(loss, grads)


def _all_finite(loss: Any, work: list[tuple[dict, list[Tensor], list[Tensor]]]) -> bool:
    if isinstance(loss, Tensor) and not bool(torch.isfinite(loss).all()):
        return False
    if isinstance(loss, float) and not math.isfinite(loss):
        return False
    grads = [g for _, _, gs in work for g in gs]
    if not grads:
        return True
    # min and max per tensor: NaN or inf show through, nothing overflows; one read of the
    # gradients (aminmax measured 10x faster than an inf-norm or isfinite().all() on CPU).
    extremes = [torch.stack(torch.aminmax(g)).float() for g in grads]
    return bool(torch.cat(extremes).isfinite().all())


# --------------------------------------------------------------------------------------------
# Rules: reference (eager) and fast (compiled) execution of one update function.
# --------------------------------------------------------------------------------------------

RuleFn = Callable[
    [list[Tensor], list[Tensor], list[dict[str, Tensor]], dict[str, Tensor], dict[str, Any]], None
]


def prepare_rule(
    rule: RuleFn,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    group_state: dict[str, Tensor],
    hp: dict[str, Any],
    finite: Tensor | None = None,
    check: bool = False,
) -> tuple[Any, Tensor | None]:
    """Phase 1 of a step: advance the per-parameter ``step`` counters and compute the rule's
    scalars (``rule.prepare``: bias corrections, group-wide norms, ...). Returns the scalars
    and the step's non-finite flag.

    A separate phase because inductor inlines 0-d computations into the elementwise loop that
    consumes them: a bias correction's ``pow`` would then run once per vector of elements
    (measured: AdamW 5x slower than torch's fused kernel).

    With ``finite`` (compiled path), what ``prepare`` writes is kept only where it is true:
    the group state, the 0-d per-parameter state and the full-size buffers the rule lists in
    ``prepare_buffers``. With ``check``, for a rule whose ``gradient_check`` names a group
    buffer that ``prepare`` leaves non-finite whenever a gradient is (a sum of squared gradient
    norms), that buffer's finiteness is ANDed into the flag: the step then needs no separate
    read of the gradients."""
    prepare = getattr(rule, "prepare", None)
    if finite is None:
        for s in states:
            s["step"] += 1
        return (prepare(params, grads, states, group_state, hp) if prepare else None), None
    written = set(getattr(rule, "prepare_buffers", ()))
    work_states = [
        {k: v.clone() if k in written or v.ndim == 0 else v for k, v in s.items()} for s in states
    ]
    for s in work_states:
        s["step"] += 1
    work_group = _copies(group_state)
    scalars = prepare(params, grads, work_states, work_group, hp) if prepare else None
    if check:
        finite = finite & work_group[rule.gradient_check].isfinite()
    for old, new in zip([*states, group_state], [*work_states, work_group], strict=True):
        _select_into(old, {k: v for k, v in new.items() if v is not old.get(k)}, finite)
    return scalars, finite


def apply_rule(
    rule: RuleFn,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    group_state: dict[str, Tensor],
    hp: dict[str, Any],
    scalars: Any,
    finite: Tensor | None = None,
) -> None:
    """Phase 2 of a step: run ``rule`` on one group; low-precision parameters are updated in
    float32 and written back. ``scalars`` (phase 1's output) is passed on to rules that have a
    ``prepare``.

    With ``finite`` (a 0-d bool tensor; compiled path only) the rule runs on copies of the
    parameters and state, and each is written back as ``where(finite, new, old)``: a skipped
    step leaves everything bit-identical without a host sync, and inductor fuses the copies
    away (the kernel still reads and writes each tensor once)."""
    masked = finite is not None
    work = [p.float() if p.dtype in LOW_PRECISION else (p.clone() if masked else p) for p in params]
    work_grads = [g.float() if g.dtype in LOW_PRECISION else g for g in grads]
    work_states = [_copies(s) for s in states] if masked else states
    work_group = _copies(group_state) if masked else group_state
    if hasattr(rule, "prepare"):
        rule(work, work_grads, work_states, work_group, hp, scalars)
    else:
        rule(work, work_grads, work_states, work_group, hp)
    for p, w in zip(params, work, strict=True):
        if w is not p:
            p.copy_(torch.where(finite, w, p) if masked else w)
    if masked:
        for old, new in zip([*states, group_state], [*work_states, work_group], strict=True):
            _select_into(old, new, finite)


def _copies(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}


def _select_into(old: dict[str, Tensor], new: dict[str, Tensor], finite: Tensor) -> None:
    """``old[k] = where(finite, new[k], old[k])`` in place, for every tensor in ``new``."""
    for key, value in new.items():
        if not isinstance(value, Tensor):
            old[key] = value
        elif key not in old:
            old[key] = torch.where(finite, value, torch.zeros_like(value))
        else:
            old[key].copy_(torch.where(finite, value, old[key]))


def run_rule(rule: RuleFn, *args: Any) -> Tensor | None:
    """Both phases, one after the other: eagerly, the readable reference; compiled, one graph
    per chunk for rules whose scalars are per tensor (``rule.per_tensor``). ``args``:
    params, grads, states, group_state, hp, and optionally finite and check; returns the
    step's flag."""
    scalars, finite = prepare_rule(rule, *args)
    apply_rule(rule, *args[:5], scalars, finite)
    return finite


_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}
# Tensors per compiled call of the elementwise phase: bounds compile time (the graph is
# unrolled over its tensors) while amortising the per-call overhead (about 0.1 ms a call,
# mostly per input tensor: the step of a transformer's 64 tensors paid 2-3 ms of it).
CHUNK = 8
# Tensors below SMALL_NUMEL elements (biases, norm weights) are chunked together whatever
# their shape, up to SMALL_CHUNK a call: their loops are short, so the bounds checks of loops
# of different lengths fused together cost nothing, and the calls saved do.
SMALL_NUMEL = 1 << 16
SMALL_CHUNK = 64
# Inductor re-checks every input's sizes and strides on each call, which dynamo's guards have
# already matched: 0.85 us an input, 0.15 ms of the 40 biases' call. Its C++ kernels are built
# with floating-point contraction off; on, a multiply and an add become one fused
# multiply-add (one rounding instead of two, well within the fast path's tolerance of the
# eager reference): measured in one run, x fused AdamW, diffGrad 1.91 -> 1.59 (its step is
# compute-bound), NAdamW 1.08 -> 1.06, Lion 0.80 -> 0.79.
_OPTIONS = {"size_asserts": False, "cpp.enable_floating_point_contract_flag": "fast"}
# For the large tensors of a rule with ``tensor_by_tensor`` (norms of the update, then the
# update): inductor fuses loops over the same number of elements into one when they share at
# least this many bytes of reads (default 10, so shared hyperparameters are enough). Raised,
# each tensor's loops stay its own: a loop reads 3-4 streams, not 15-20, and LARS's update
# of a tensor runs straight after its norms, re-reading it from the last-level cache (LAMB's
# norms still all come first). Measured on 12 x 1024x1024, LARS's two passes x fused AdamW:
# 1.59 fused, 1.34 tensor by tensor (plain C loops: 1.23 all norms first, 1.09 tensor by
# tensor).
_TENSOR_BY_TENSOR = {"score_fusion_memory_threshold": 1024}


@functools.cache
def inductor_options(tensor_by_tensor: bool = False) -> dict[str, Any]:
    """``_OPTIONS`` (and ``_TENSOR_BY_TENSOR``) that this torch's inductor knows (an unknown
    option fails the compile, and torch releases in the supported range differ in what they
    have)."""
    from torch._inductor import config

    known = config.get_config_copy()
    options = {**_OPTIONS, **(_TENSOR_BY_TENSOR if tensor_by_tensor else {})}
    return {k: v for k, v in options.items() if k in known}


def compiled_phase(
    rule: RuleFn, phase: Callable[..., Any], signature: Any = None, tensor_by_tensor: bool = False
):
    """``phase`` (``prepare_rule``, ``apply_rule`` or ``run_rule``) for ``rule``, compiled and
    cached per ``signature``; with ``tensor_by_tensor``, its tensors' loops are not fused
    together (see ``_TENSOR_BY_TENSOR``).

    Each key gets its own copy of the code object, so torch.compile's per-code cache (and its
    recompile limit) is not shared between rules or between the chunks of one rule.
    """
    key = (id(rule), phase.__name__, signature, tensor_by_tensor)
    if key not in _COMPILED:

        def run(*args, _rule=rule, _phase=phase):
            return _phase(_rule, *args)

        run.__code__ = run.__code__.replace(co_name=f"{phase.__name__}_{_name(rule)}")
        options = inductor_options(tensor_by_tensor)
        _COMPILED[key] = torch.compile(run, fullgraph=True, dynamic=False, options=options)
    return _COMPILED[key]


def _compiled(fn: Callable[..., Any], signature: Any) -> Callable[..., Any]:
    """``fn`` compiled once per ``signature``, each with its own code object."""
    key = (fn.__qualname__, signature)
    if key not in _COMPILED:

        def run(*args, _fn=fn):
            return _fn(*args)

        run.__code__ = run.__code__.replace(co_name=fn.__name__.lstrip("_"))
        _COMPILED[key] = torch.compile(
            run, fullgraph=True, dynamic=False, options=inductor_options()
        )
    return _COMPILED[key]


def _chunks(params: list[Tensor]) -> list[list[int]]:
    """Indices of same-shaped tensors, in runs of at most ``CHUNK``: inductor fuses the loops
    of one graph horizontally, and loops of different lengths fused together pay a bounds
    check per iteration for every tensor (40 small biases beside 1M-element matrices cost
    more than the matrices' update). Small tensors of any shape share runs of ``SMALL_CHUNK``.
    """
    by_shape: dict[tuple[Any, ...], list[int]] = {}
    small: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(params):
        if p.numel() < SMALL_NUMEL:
            small.setdefault((p.dtype, p.device), []).append(i)
        else:
            by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append(i)
    runs = [run for ids in by_shape.values() for run in _balanced(ids, CHUNK)]
    return runs + [run for ids in small.values() for run in _balanced(ids, SMALL_CHUNK)]


def _balanced(ids: list[int], most: int) -> list[list[int]]:
    """``ids`` in the fewest runs of at most ``most``, of near-equal lengths (12 tensors as
    6 + 6, not 8 + 4: a kernel over few tensors reads too few streams of memory)."""
    runs = -(-len(ids) // most)
    return [ids[k * len(ids) // runs : (k + 1) * len(ids) // runs] for k in range(runs)]


def _signature(tensors: list[Tensor]) -> tuple[Any, ...]:
    return tuple((tuple(t.shape), t.dtype, t.device.type) for t in tensors)


def chunk_plan(rule: RuleFn, params: list[Tensor]) -> list[tuple[list[int], Callable[..., Any]]]:
    """The elementwise phase's chunks of ``params`` (see ``_chunks``), each with its compiled
    graph: ``run_rule`` for a rule whose scalars are per tensor, else ``apply_rule``. A
    ``RuleOptimizer`` keeps the plan of each param group while its parameters stay the same:
    building it reads every tensor's shape and hashes their signatures, which took 0.2 ms of
    a 64-tensor step's 0.35 ms of Python (more with the caches cold, as after a step).
    A chunk of large tensors of a rule with ``tensor_by_tensor`` is compiled with
    ``_TENSOR_BY_TENSOR``; small tensors are not (they fit in cache anyway, and their loops,
    fused, cost fewer passes)."""
    phase = run_rule if getattr(rule, "per_tensor", False) else apply_rule
    by_tensor = getattr(rule, "tensor_by_tensor", False)
    plan = []
    for ids in _chunks(params):
        chunk = [params[i] for i in ids]
        one_by_one = by_tensor and chunk[0].numel() >= SMALL_NUMEL
        plan.append((ids, compiled_phase(rule, phase, _signature(chunk), one_by_one)))
    return plan


def run_rule_compiled(
    rule: RuleFn,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Tensor]],
    group_state: dict[str, Tensor],
    hp: dict[str, Any],
    finite: Tensor | None = None,
    check: bool = False,
    plan: list[tuple[list[int], Callable[..., Any]]] | None = None,
) -> Tensor | None:
    """Both phases through torch.compile; returns the step's non-finite flag (``finite`` and,
    with ``check``, the rule's own gradient check: see ``prepare_rule``).

    A rule whose scalars are per tensor (``rule.per_tensor``: Adam's bias corrections, a
    trust ratio's norms; not a norm over the group) runs as one graph per chunk of
    same-shaped tensors, both phases in it (its scalars stored once through ``realized``).
    Otherwise phase 1 is one graph for the group, so its scalars reach phase 2's fused
    kernels as loaded inputs, and phase 2 runs per chunk when the rule has a ``prepare`` (its
    per-tensor work then needs nothing from other tensors), else as one graph for the group.
    ``plan``: ``chunk_plan(rule, params)``, made here if not given."""
    per_tensor = getattr(rule, "per_tensor", False)
    scalars = None
    if not per_tensor:
        prepare = compiled_phase(rule, prepare_rule)
        scalars, finite = prepare(params, grads, states, group_state, hp, finite, check)
        if not hasattr(rule, "prepare"):
            apply = compiled_phase(rule, apply_rule)
            apply(params, grads, states, group_state, hp, scalars, finite)
            return finite
    for ids, compiled in plan if plan is not None else chunk_plan(rule, params):
        p = [params[i] for i in ids]
        args = [p, [grads[i] for i in ids], [states[i] for i in ids], group_state, hp]
        if per_tensor:
            compiled(*args, finite)
        else:
            compiled(*args, [scalars[i] for i in ids], finite)
    return finite


def _name(rule: Any) -> str:
    return getattr(rule, "__name__", type(rule).__name__)


def _tensorize(value: Any, device: torch.device) -> Any:
    """Numbers become 0-d float64 tensors so a compiled rule is not recompiled when a
    scheduler changes the learning rate."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return torch.tensor(float(value), dtype=torch.float64, device=device)
    if isinstance(value, tuple | list):
        return tuple(_tensorize(v, device) for v in value)
    return value


def compiler_available(device: torch.device) -> bool:
    """Whether torch.compile can build kernels for ``device`` here."""
    return _compiler_available(device.type)


@functools.cache
def _compiler_available(device_type: str) -> bool:
    # cached: looking the compiler up on PATH took 9 stat calls, every step
    if device_type == "cuda":
        return True
    if device_type != "cpu":
        return False
    return any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++"))


class RuleOptimizer(ZooOptimizer):
    """An optimizer defined by one update rule over each param group.

    Subclasses set ``rule``: a callable ``rule(params, grads, states, group_state, hp)`` over
    the group's tensors that updates parameters and state in place. A rule that needs scalars
    (bias corrections, norms over the group) computes them in ``rule.prepare(params, grads,
    states, group_state, hp)``, whose result reaches it as a sixth argument; the two run as
    separate compiled graphs (see ``prepare_rule``); ``prepare`` returns a list with one entry
    per parameter, so the elementwise phase can run on chunks of same-shaped tensors (see
    ``run_rule_compiled``). Its attributes declare the state it needs:

    - ``buffers``: names of full-size per-parameter tensors, zero-initialised (float32 for
      low-precision parameters, else the parameter's dtype); ``states[i]`` also holds a 0-d
      ``step`` counter, advanced before the rule runs;
    - ``group_buffers`` (optional): names of 0-d float32 tensors shared by the whole group
      (e.g. AdaGrad-Norm's accumulated squared gradient norm), passed as ``group_state`` and
      stored in the state of the group's first parameter;
    - ``init_state(param, state)`` (optional): fills buffers that do not start at zero (e.g. a
      copy of the initial parameters);
    - ``prepare_buffers`` (optional): the full-size buffers that ``prepare`` writes (so that a
      step skipped on the device, see below, can keep their old values).

    Non-finite gradients on the compiled path: with ``on_nonfinite="skip"`` the check is fused
    into the step (one max-reduction over the gradients, no host sync), and every write of the
    rule is masked by the result, so a skipped step leaves parameters and state bit-identical
    and ``skipped_steps`` is read from the device only when asked for.

    ``hp`` is the group's hyperparameters: Python numbers on the reference path, 0-d tensors on
    the compiled path, so a rule uses arithmetic (``x * b``), not ``alpha=`` keyword scalars,
    and ``torch.where`` rather than Python ``if`` on values (no host sync).

    ``implementation``: ``"reference"`` runs the rule eagerly (a per-tensor loop),
    ``"compiled"`` runs it as generated C loops on the CPU where ``cloops.plan_for`` can
    write it (elementwise rules with whole-tensor norms, float32 or float64 contiguous
    tensors), else through ``torch.compile`` (fused kernels per chunk of tensors), ``"auto"``
    compiles on CUDA, and on CPU for groups of at least 2**20 elements when a C++ compiler is
    present; if compiling fails it warns once and falls back to the reference. Classes whose
    rule cannot be compiled set ``compilable = False``.
    """

    rule: ClassVar[Any]
    compilable: ClassVar[bool] = True

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        implementation: Implementation = "auto",
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        implementation = os.environ.get("OPTZOO_IMPLEMENTATION", implementation)  # type: ignore[assignment]
        check_choice("implementation", implementation, ("auto", "reference", "compiled"))
        if implementation == "compiled" and not self.compilable:
            raise ValueError(f"{type(self).__name__} has no compiled implementation")
        self.implementation: Implementation = implementation
        # whether the compiled path may run the rule as C loops on the CPU (module default
        # ``C_LOOPS``; False keeps torch.compile, to compare the two)
        self.use_c_loops = C_LOOPS
        self._compile_failed = False
        # id(param group) -> (its hyperparameters, device, them as tensors) for the compiled path
        self._hp_cache: dict[int, tuple[dict[str, Any], torch.device, dict[str, Any]]] = {}
        # ids of a group's parameters that have gradients -> [whether "auto" compiles them,
        # their chunk plan or None] (see ``_layout``)
        self._layouts: dict[tuple[int, ...], list[Any]] = {}
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._layouts.clear()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._layouts.clear()  # C loops are built for the state's dtypes, which may differ

    def _init_state(self, p: Tensor, state: dict[str, Tensor]) -> None:
        dtype = state_dtype(p)
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        for name in self.rule.buffers:
            state[name] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        init = getattr(self.rule, "init_state", None)
        if init is not None:
            init(p, state)

    def _group_state(self, group: dict[str, Any]) -> dict[str, Tensor]:
        names = getattr(self.rule, "group_buffers", ())
        if not names:
            return {}
        first = group["params"][0]
        holder = self.state[first]
        for name in names:
            if name not in holder:
                holder[name] = torch.zeros((), dtype=torch.float32, device=first.device)
        return {name: holder[name] for name in names}

    def _use_compiled(self, params: list[Tensor]) -> bool:
        if self.implementation == "reference" or self._compile_failed or not self.compilable:
            return False
        if self.implementation == "compiled":
            return True
        return self._layout(params)[0]

    def _layout(self, params: list[Tensor]) -> list[Any]:
        """For one set of parameters, found by their identities (their param group keeps them
        alive, so the ids are not reused): whether ``"auto"`` compiles them, and their chunk
        plan (``chunk_plan``, made on their first compiled step). Were a parameter's shape
        changed in place, the compiled graphs' own guards would still recompile for it."""
        key = tuple(map(id, params))
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) > 64:  # the set of parameters with gradients keeps changing
                self._layouts.clear()
            device = params[0].device
            auto = compiler_available(device) and (
                device.type == "cuda" or sum(p.numel() for p in params) >= AUTO_COMPILE_MIN_NUMEL
            )
            layout = self._layouts[key] = [auto, None, None]
        return layout

    def _c_loops(self, layout: list[Any], params: list[Tensor], states: list[Any], hp: dict):
        """The group's ``cloops.CPlan`` on the CPU, made on its first step (and again when a
        non-number hyperparameter changes), or None: the rule then runs through
        torch.compile."""
        if not self.use_c_loops or params[0].device.type != "cpu":
            return None
        loops = layout[2]
        if loops is None or (loops and not loops.matches(hp)):
            loops = layout[2] = cloops.plan_for(self.rule, params, states, hp) or False
        return loops or None

    def _tensor_hp(self, group: dict[str, Any], hp: dict[str, Any], device: torch.device):
        """The group's hyperparameters as 0-d tensors, made again only when one changed."""
        cached = self._hp_cache.get(id(group))
        if cached is None or cached[0] != hp or cached[1] != device:
            cached = (hp, device, {k: _tensorize(v, device) for k, v in hp.items()})
            self._hp_cache[id(group)] = cached
        return cached[2]

    def _update_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]):
        group_state = self._group_state(group)
        states = []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                self._init_state(p, state)
            states.append(state)
        hp = {k: v for k, v in group.items() if k != "params"}
        finite = self._finite
        if self._use_compiled(params):
            device = params[0].device
            try:
                layout = self._layout(params)
                loops = self._c_loops(layout, params, states, hp)
                if loops is not None and finite is not None and not bool(finite):
                    return  # on the CPU, reading the fused check's flag costs no device sync
                if loops is not None and not loops(params, grads, states, hp):
                    layout[2] = None  # a state tensor was replaced: a plan for what is there
                    loops = self._c_loops(layout, params, states, hp)
                    if loops is not None:
                        loops(params, grads, states, hp)
                if loops is not None:
                    return
                tensor_hp = self._tensor_hp(group, hp, device)
                if layout[1] is None:
                    layout[1] = chunk_plan(self.rule, params)
                args = (params, grads, states, group_state, tensor_hp, finite)
                finite = run_rule_compiled(self.rule, *args, self._check_in_update, layout[1])
                if finite is not None:
                    self._finite = finite
                return
            except Exception as error:  # compile failure: fall back unless asked explicitly
                if self.implementation == "compiled":
                    raise
                warnings.warn(
                    f"{type(self).__name__}: torch.compile failed ({error!r}); "
                    "using the reference implementation",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._compile_failed = True
        # A fused check was planned and the compiled update failed: decide on the host.
        work = [(group, params, grads)]
        if finite is not None and not (bool(finite) and _all_finite(None, work)):
            self._finite = torch.zeros((), dtype=torch.bool, device=finite.device)
            return
        run_rule(self.rule, params, grads, states, group_state, hp)

    def _fuses_nonfinite_check(self, work: list[tuple[dict, list[Tensor], list[Tensor]]]) -> bool:
        return all(self._use_compiled(params) for _, params, _ in work)

    def _update_checks_gradients(self, work: list[tuple[dict, list[Tensor], list[Tensor]]]):
        # one group: its prepare sees every gradient of the step
        return len(work) == 1 and getattr(self.rule, "gradient_check", None) is not None
