"""The contract every registered gradient-based algorithm keeps (DESIGN.md section 4).

Parametrized over the registry: registering an algorithm puts it under every check here.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import re

import pytest
import torch
from torch import nn

import optzoo
from optzoo._core.optimizer import ZooOptimizer
from optzoo.registry import REGISTRY, AlgorithmSpec
from tests.problems import make_problem

GRADIENT_ORACLES = ("gradient", "gradient_closure")
SPECS = [s for s in REGISTRY.values() if s.oracle in GRADIENT_ORACLES]
IDS = [s.name for s in SPECS]


def build(spec: AlgorithmSpec, params, **overrides) -> ZooOptimizer:
    hp = {**spec.test_hyperparameters, **overrides}
    return optzoo.create(spec.name, params, **hp)


def closure_for(opt, model, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        return loss

    return closure


def run(opt, model, loss_fn, steps: int) -> list[float]:
    closure = closure_for(opt, model, loss_fn)
    return [float(opt.step(closure)) for _ in range(steps)]


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


# -- 1. validation -------------------------------------------------------------------------


def _invalid_cases(spec: AlgorithmSpec):
    signature = inspect.signature(spec.cls.__init__).parameters
    defaults = spec.defaults
    for name, interval in spec.cls.hyperparameter_ranges.items():
        if name not in signature:
            continue
        for bad in interval.outside_examples():
            if isinstance(defaults.get(name), tuple):
                for i in range(len(defaults[name])):
                    value = list(defaults[name])
                    value[i] = bad
                    yield {name: tuple(value)}, f"{name}[{i}]"
            else:
                yield {name: bad}, name
    yield from ((dict(kw), msg) for kw, msg in spec.invalid_hyperparameters)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_invalid_hyperparameters_name_the_parameter(spec):
    cases = list(_invalid_cases(spec))
    assert cases, f"{spec.name} declares no hyperparameter ranges"
    for kwargs, fragment in cases:
        p = nn.Parameter(torch.zeros(3))
        with pytest.raises(ValueError, match=re.escape(fragment)):
            build(spec, [p], **kwargs)
        with pytest.raises(ValueError, match=re.escape(fragment)):
            build(spec, [p]).add_param_group({"params": [nn.Parameter(torch.zeros(2))], **kwargs})


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_empty_complex_and_sparse_inputs_raise_clearly(spec):
    with pytest.raises(ValueError, match="empty parameter list"):
        build(spec, [])
    if not spec.cls.supports_complex:
        with pytest.raises(ValueError, match="complex"):
            build(spec, [nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    p = nn.Parameter(torch.zeros(4))
    opt = build(spec, [p])
    p.grad = torch.sparse_coo_tensor([[0]], [1.0], (4,))
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step(lambda: torch.tensor(1.0))


# -- 2. convergence ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_converges_on_reference_problem(spec):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters())
    steps, threshold = spec.convergence
    losses = run(opt, problem.model, problem.loss, steps)
    final = float(problem.loss(problem.model))
    assert math.isfinite(final)
    assert final < threshold, f"{spec.name}: {losses[0]:.4f} -> {final:.4f} (want < {threshold})"


# -- 3. checkpoints ------------------------------------------------------------------------


def _plain(value) -> bool:
    if isinstance(value, torch.Tensor | int | float | bool | str | type(None)):
        return True
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _plain(v) for k, v in value.items())
    return False


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_dict_round_trip_is_bit_exact(spec):
    k, m = 3, 4
    problem = make_problem("mlp")
    twin = copy.deepcopy(problem.model)
    opt = build(spec, problem.model.parameters())
    run(opt, problem.model, problem.loss, k)

    buffer = io.BytesIO()
    torch.save({"model": problem.model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert _plain(saved["opt"]), "optimizer state must hold only tensors and plain values"

    twin.load_state_dict(saved["model"])
    resumed = build(spec, twin.parameters())
    resumed.load_state_dict(saved["opt"])
    run(opt, problem.model, problem.loss, m)
    run(resumed, twin, problem.loss, m)
    for a, b in zip(problem.model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(problem.model.parameters(), twin.parameters(), strict=True):
        for key, value in opt.state[a].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, resumed.state[b][key]), key
                assert value.dtype == resumed.state[b][key].dtype, key


# -- 4. param groups, missing gradients, schedulers ----------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_param_groups_match_separate_optimizers(spec):
    lr = spec.test_hyperparameters.get("lr", spec.defaults.get("lr", 1e-3))
    problem = make_problem("mlp")
    twin = copy.deepcopy(problem.model)
    first, second = problem.model[0], problem.model[2]
    grouped = build(
        spec,
        [{"params": first.parameters()}, {"params": second.parameters(), "lr": lr * 0.3}],
    )
    run(grouped, problem.model, problem.loss, 3)

    opt_a = build(spec, twin[0].parameters())
    opt_b = build(spec, twin[2].parameters(), lr=lr * 0.3)
    for _ in range(3):
        for o in (opt_a, opt_b):
            o.zero_grad()
        loss = problem.loss(twin)
        loss.backward()
        opt_a.step(lambda loss=loss: loss)
        opt_b.step(lambda loss=loss: loss)
    torch.testing.assert_close(flat(problem.model), flat(twin), rtol=1e-6, atol=1e-7)
    assert not torch.equal(flat(problem.model), flat(make_problem("mlp").model))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_parameters_without_gradient_are_skipped(spec):
    problem = make_problem("mlp")
    frozen = nn.Parameter(torch.ones(5))
    opt = build(spec, [*problem.model.parameters(), frozen])
    run(opt, problem.model, problem.loss, 2)
    assert torch.equal(frozen, torch.ones(5))
    assert frozen not in opt.state or not opt.state[frozen]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_lr_scheduler_changes_take_effect(spec):
    problem = make_problem("mlp")
    opt = build(spec, problem.model.parameters())
    # full lr for two steps, then zero: parameters must stop moving.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 2 else 0.0)
    start = flat(problem.model)
    for _ in range(2):
        run(opt, problem.model, problem.loss, 1)
        sched.step()
    moved = flat(problem.model)
    assert not torch.equal(start, moved)
    run(opt, problem.model, problem.loss, 2)
    torch.testing.assert_close(flat(problem.model), moved, rtol=0, atol=0)


# -- 5. non-finite gradients and losses ----------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_gradient_skips_the_step_and_counts_it(spec, bad):
    problem = make_problem("mlp")
    opt = build(spec, problem.model.parameters())
    run(opt, problem.model, problem.loss, 2)
    before_params = flat(problem.model)
    before_state = copy.deepcopy(opt.state_dict()["state"])

    opt.zero_grad()
    problem.loss(problem.model).backward()
    problem.model[0].weight.grad[0, 0] = bad
    opt.step()
    assert opt.skipped_steps == 1
    assert torch.equal(flat(problem.model), before_params)
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, before_state[pid][key]), key

    # a non-finite loss from the closure is skipped too; then training goes on.
    opt.step(lambda: torch.tensor(math.nan))
    assert opt.skipped_steps == 2
    run(opt, problem.model, problem.loss, 1)
    assert not torch.equal(flat(problem.model), before_params)
    assert torch.isfinite(flat(problem.model)).all()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_nonfinite_gradient_can_raise(spec):
    problem = make_problem("mlp")
    opt = build(spec, problem.model.parameters(), on_nonfinite="raise")
    opt.zero_grad()
    problem.loss(problem.model).backward()
    problem.model[2].bias.grad.fill_(math.inf)
    before = flat(problem.model)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    assert torch.equal(flat(problem.model), before)


# -- 6. dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bfloat16_parameters_keep_float32_state(spec):
    if not spec.supports_bf16:
        pytest.skip(f"{spec.name} declares no bfloat16 support")
    problem = make_problem("mlp", dtype=torch.bfloat16)
    opt = build(spec, problem.model.parameters())
    losses = run(opt, problem.model, problem.loss, 20)
    assert all(p.dtype == torch.bfloat16 for p in problem.model.parameters())
    assert losses[-1] < losses[0]
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim:
                assert value.dtype == torch.float32, key


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float64_follows_float32_trajectory(spec):
    if not spec.supports_float64:
        pytest.skip(f"{spec.name} declares no float64 support")
    p32, p64 = make_problem("mlp"), make_problem("mlp", dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(p32.model.parameters(), p64.model.parameters(), strict=True):
            b.copy_(a)
    run(build(spec, p32.model.parameters()), p32.model, p32.loss, 5)
    opt64 = build(spec, p64.model.parameters())
    run(opt64, p64.model, p64.loss, 5)
    torch.testing.assert_close(flat(p32.model), flat(p64.model), rtol=1e-3, atol=1e-4)
    for state in opt64.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim:
                assert value.dtype == torch.float64


# -- 7. metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_bytes_per_param_match_registry(spec):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    params = list(model.parameters())
    opt = build(spec, params)
    x = torch.randn(16, 64)
    run(opt, model, lambda m: m(x).square().mean(), 1)
    state_bytes = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )
    n = sum(p.numel() for p in params)
    expected = spec.expected_state_bytes(params)
    # scalars (step counters) add a few bytes per tensor: < 0.01 bytes/param here.
    assert state_bytes / n == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_metadata_is_true(spec):
    assert spec.cls.__module__.startswith(f"optzoo.{spec.family}."), spec.cls.__module__
    doc = " ".join(spec.cls.__doc__.split())
    title = spec.paper.split(" (")[0]
    assert title in doc, f"{spec.name}'s docstring must name its paper {title!r}"
    assert str(spec.year) in doc
    assert spec.defaults, "defaults come from the constructor signature"
    if spec.needs_closure:
        problem = make_problem(spec.reference_problem)
        opt = build(spec, problem.model.parameters())
        problem.loss(problem.model).backward()
        with pytest.raises((RuntimeError, ValueError), match="closure"):
            opt.step()


# -- fast path -----------------------------------------------------------------------------


FAST = [s for s in SPECS if s.fast_path]


@pytest.mark.parametrize("spec", FAST, ids=[s.name for s in FAST])
def test_fast_path_equals_reference(spec):
    from optzoo._core.optimizer import compiler_available

    if not compiler_available(torch.device("cpu")):
        pytest.skip("no C++ compiler for torch.compile on this machine")
    results = []
    for implementation in ("reference", "compiled"):
        problem = make_problem("mlp")
        opt = build(spec, problem.model.parameters(), implementation=implementation)
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            run(opt, problem.model, problem.loss, 4)
        state = [v.clone() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
        results.append((flat(problem.model), state))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", FAST, ids=[s.name for s in FAST])
def test_fast_path_skips_nonfinite_steps_without_touching_state(spec):
    from optzoo._core.optimizer import compiler_available

    if not compiler_available(torch.device("cpu")):
        pytest.skip("no C++ compiler for torch.compile on this machine")
    results = []
    for implementation in ("reference", "compiled"):
        problem = make_problem("mlp")
        opt = build(spec, problem.model.parameters(), implementation=implementation)
        run(opt, problem.model, problem.loss, 2)
        before = flat(problem.model)
        before_state = copy.deepcopy(opt.state_dict()["state"])
        opt.zero_grad()
        loss = problem.loss(problem.model)
        loss.backward()
        problem.model[0].weight.grad[1, 2] = math.inf
        opt.step(lambda loss=loss: loss)
        assert opt.skipped_steps == 1
        assert torch.equal(flat(problem.model), before)
        for pid, state in opt.state_dict()["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, before_state[pid][key]), key
        run(opt, problem.model, problem.loss, 2)
        results.append(flat(problem.model))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
