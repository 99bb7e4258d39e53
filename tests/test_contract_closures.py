"""The contract (DESIGN.md section 4) for algorithms whose ``step(closure)`` takes a closure
returning a 1-D tensor of per-sample values instead of gradients:

- ``per_sample_residuals``: the closure returns residuals ``r`` with loss ``mean(r**2)``;
- ``per_sample_losses``: the closure returns per-sample losses with loss their mean.

Parametrized over the registry by oracle: registering an algorithm with one of these oracles
puts it under every check here. Closures are built from ``tests.problems`` (its ``residuals``
and ``per_sample_losses`` views); helpers come from ``tests.test_contract``.
"""

from __future__ import annotations

import copy
import io
import math
import re

import pytest
import torch
from torch import nn

from optzoo.registry import REGISTRY, AlgorithmSpec
from tests.problems import Problem, make_problem
from tests.test_contract import _invalid_cases, _plain, build, flat

CLOSURE_ORACLES = ("per_sample_residuals", "per_sample_losses")
SPECS = [s for s in REGISTRY.values() if s.oracle in CLOSURE_ORACLES]
IDS = [s.name for s in SPECS]


def values_of(spec: AlgorithmSpec, problem: Problem):
    """The per-sample function of the model that ``spec``'s closure returns."""
    view = problem.residuals if spec.oracle == "per_sample_residuals" else problem.per_sample_losses
    assert view is not None, f"the problem has no view for the {spec.oracle!r} oracle"
    return view


def run(spec: AlgorithmSpec, opt, problem: Problem, model: nn.Module, steps: int) -> list[float]:
    view = values_of(spec, problem)
    losses = []
    for _ in range(steps):
        opt.step(lambda: view(model))
        losses.append(float(problem.loss(model).detach()))
    return losses


def has_lr(spec: AlgorithmSpec) -> bool:
    return "lr" in spec.defaults


# -- 1. validation -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_invalid_hyperparameters_name_the_parameter(spec):
    cases = list(_invalid_cases(spec))
    assert cases, f"{spec.name} declares no hyperparameter ranges"
    for kwargs, fragment in cases:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            build(spec, [nn.Parameter(torch.zeros(3))], **kwargs)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_empty_and_complex_inputs_raise_clearly(spec):
    with pytest.raises(ValueError, match="empty parameter list"):
        build(spec, [])
    with pytest.raises(ValueError, match="complex"):
        build(spec, [nn.Parameter(torch.zeros(3, dtype=torch.complex64))])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_closure_is_required_and_checked(spec):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters())
    before = flat(problem.model)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    with pytest.raises(ValueError, match="1-D tensor"):
        opt.step(lambda: problem.loss(problem.model))  # a scalar, not per-sample values
    assert torch.equal(flat(problem.model), before)


# -- 2. convergence ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_converges_on_reference_problem(spec):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters())
    steps, threshold = spec.convergence
    start = float(problem.loss(problem.model).detach())
    final = run(spec, opt, problem, problem.model, steps)[-1]
    assert math.isfinite(final)
    assert final < threshold, f"{spec.name}: {start:.4f} -> {final:.4f} (want < {threshold})"


# -- 3. checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_round_trip_is_bit_exact(spec):
    k, m = 3, 4
    problem = make_problem(spec.reference_problem)
    twin = copy.deepcopy(problem.model)
    opt = build(spec, problem.model.parameters())
    run(spec, opt, problem, problem.model, k)

    buffer = io.BytesIO()
    torch.save({"model": problem.model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert _plain(saved["opt"]), "optimizer state must hold only tensors and plain values"

    twin.load_state_dict(saved["model"])
    resumed = build(spec, twin.parameters())
    resumed.load_state_dict(saved["opt"])
    run(spec, opt, problem, problem.model, m)
    run(spec, resumed, problem, twin, m)
    for a, b in zip(problem.model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
        for key, value in opt.state[a].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, resumed.state[b][key]), key
                assert value.dtype == resumed.state[b][key].dtype, key


# -- 4. param groups, frozen parameters, schedulers ----------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_param_groups_are_honoured_or_refused(spec):
    problem = make_problem("mlp")
    first, second = problem.model[0], problem.model[2]
    groups = [{"params": first.parameters()}, {"params": second.parameters()}]
    if not has_lr(spec):
        with pytest.raises(ValueError, match="param group"):
            build(spec, groups)
        return
    # The per-sample step couples all parameters; each group moves by its own lr times it.
    twin = copy.deepcopy(problem.model)
    lr = spec.test_hyperparameters.get("lr", spec.defaults["lr"])
    grouped = build(spec, [groups[0], {**groups[1], "lr": lr * 0.3}])
    single = build(spec, twin.parameters())
    start = flat(problem.model)
    run(spec, grouped, problem, problem.model, 1)
    run(spec, single, problem, twin, 1)
    sizes = [p.numel() for p in first.parameters()]
    n_first = sum(sizes)
    moved, reference = flat(problem.model) - start, flat(twin) - start
    torch.testing.assert_close(moved[:n_first], reference[:n_first], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(moved[n_first:], 0.3 * reference[n_first:], rtol=1e-4, atol=1e-7)
    assert reference.abs().max() > 0


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_parameters_without_gradient_are_skipped(spec):
    problem = make_problem(spec.reference_problem)
    frozen = nn.Parameter(torch.ones(5))
    opt = build(spec, [*problem.model.parameters(), frozen])
    start = flat(problem.model)
    run(spec, opt, problem, problem.model, 2)
    assert torch.equal(frozen, torch.ones(5))
    assert frozen not in opt.state or not opt.state[frozen]
    assert not torch.equal(flat(problem.model), start)


@pytest.mark.parametrize("spec", [s for s in SPECS if has_lr(s)], ids=lambda s: s.name)
def test_lr_scheduler_changes_take_effect(spec):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 2 else 0.0)
    start = flat(problem.model)
    for _ in range(2):
        run(spec, opt, problem, problem.model, 1)
        sched.step()
    moved = flat(problem.model)
    assert not torch.equal(start, moved)
    run(spec, opt, problem, problem.model, 2)
    torch.testing.assert_close(flat(problem.model), moved, rtol=0, atol=0)


# -- 5. non-finite values ------------------------------------------------------------------


def _poisoned(view, bad: float):
    def closure_of(model: nn.Module) -> torch.Tensor:
        values = view(model)
        return values + torch.zeros_like(values).index_fill(0, torch.tensor([0]), bad)

    return closure_of


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_values_skip_the_step_and_count_it(spec, bad):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters())
    run(spec, opt, problem, problem.model, 2)
    before_params = flat(problem.model)
    before_state = copy.deepcopy(opt.state_dict()["state"])
    poisoned = _poisoned(values_of(spec, problem), bad)
    opt.step(lambda: poisoned(problem.model))
    assert opt.skipped_steps == 1
    assert torch.equal(flat(problem.model), before_params)
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, before_state[pid][key]), key
    run(spec, opt, problem, problem.model, 1)
    assert opt.skipped_steps == 1
    assert not torch.equal(flat(problem.model), before_params)
    assert torch.isfinite(flat(problem.model)).all()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_nonfinite_values_can_raise(spec):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters(), on_nonfinite="raise")
    poisoned = _poisoned(values_of(spec, problem), math.inf)
    before = flat(problem.model)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(lambda: poisoned(problem.model))
    assert torch.equal(flat(problem.model), before)


# -- 6. dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bfloat16_parameters_train(spec):
    if not spec.supports_bf16:
        pytest.skip(f"{spec.name} declares no bfloat16 support")
    problem = make_problem(spec.reference_problem, dtype=torch.bfloat16)
    opt = build(spec, problem.model.parameters())
    start = float(problem.loss(problem.model).detach())
    losses = run(spec, opt, problem, problem.model, 10)
    assert all(p.dtype == torch.bfloat16 for p in problem.model.parameters())
    assert losses[-1] < start
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim:
                assert value.dtype == torch.float32, key


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float64_follows_float32_trajectory(spec):
    if not spec.supports_float64:
        pytest.skip(f"{spec.name} declares no float64 support")
    name = spec.reference_problem
    p32, p64 = make_problem(name), make_problem(name, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(p32.model.parameters(), p64.model.parameters(), strict=True):
            b.copy_(a)
    run(spec, build(spec, p32.model.parameters()), p32, p32.model, 3)
    run(spec, build(spec, p64.model.parameters()), p64, p64.model, 3)
    torch.testing.assert_close(flat(p32.model), flat(p64.model), rtol=1e-3, atol=1e-4)


# -- 7. metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_bytes_per_param_match_registry(spec):
    problem = make_problem("mlp")
    params = list(problem.model.parameters())
    opt = build(spec, params)
    run(spec, opt, problem, problem.model, 1)
    state_bytes = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )
    n = sum(p.numel() for p in params)
    assert state_bytes / n == pytest.approx(spec.expected_state_bytes(params), abs=0.05)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_metadata_is_true(spec):
    assert spec.cls.__module__.startswith(f"optzoo.{spec.family}."), spec.cls.__module__
    doc = " ".join(spec.cls.__doc__.split())
    title = spec.paper.split(" (")[0]
    assert title in doc, f"{spec.name}'s docstring must name its paper {title!r}"
    assert str(spec.year) in doc
    assert spec.defaults, "defaults come from the constructor signature"
    assert spec.needs_closure, "a per-sample oracle is a closure oracle"
