"""The contract (DESIGN.md section 4) for algorithms whose oracle is loss values only
(``oracle="loss_closure"``): parametrized over the registry, so registering such an algorithm
puts it under every check here."""

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
from optzoo.registry import REGISTRY, AlgorithmSpec
from tests.problems import make_problem

SPECS = [s for s in REGISTRY.values() if s.oracle == "loss_closure"]
IDS = [s.name for s in SPECS]


def build(spec: AlgorithmSpec, params, **overrides):
    return optzoo.create(spec.name, params, **{**spec.test_hyperparameters, **overrides})


def run(opt, model, loss_fn, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        loss = opt.step(lambda: loss_fn(model))
        out.append(math.nan if loss is None else float(loss))
    return out


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def small_mlp(dtype=torch.float32, seed: int = 0):
    """A 4-8-1 tanh MLP on 64 samples (49 parameters): cheap for population methods."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    x, y = x.to(dtype), y.to(dtype)
    return model, lambda m: nn.functional.mse_loss(m(x), y)


# -- 1. validation -------------------------------------------------------------------------


def _invalid_cases(spec: AlgorithmSpec):
    signature = inspect.signature(spec.cls.__init__).parameters
    for name, interval in spec.cls.hyperparameter_ranges.items():
        if name in signature:
            for bad in interval.outside_examples():
                yield {name: bad}, name
    yield from ((dict(kw), msg) for kw, msg in spec.invalid_hyperparameters)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_invalid_hyperparameters_name_the_parameter(spec):
    cases = list(_invalid_cases(spec))
    assert cases, f"{spec.name} declares no hyperparameter ranges"
    for kwargs, fragment in cases:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            build(spec, [nn.Parameter(torch.zeros(3))], **kwargs)
        opt = build(spec, [nn.Parameter(torch.zeros(3))])
        with pytest.raises(ValueError, match=re.escape(fragment)):
            opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))], **kwargs})
        assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="seed"):
        build(spec, [nn.Parameter(torch.zeros(3))], seed=-1)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_empty_and_complex_inputs_raise_clearly(spec):
    with pytest.raises(ValueError, match="empty parameter list"):
        build(spec, [])
    with pytest.raises(ValueError, match="complex"):
        build(spec, [nn.Parameter(torch.zeros(3, dtype=torch.complex64))])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_without_closure_names_the_closure(spec):
    assert spec.needs_closure
    opt = build(spec, [nn.Parameter(torch.zeros(3))])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()


# -- 2. convergence within an evaluation budget ---------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_converges_on_reference_problem(spec):
    problem = make_problem(spec.reference_problem)
    opt = build(spec, problem.model.parameters())
    steps, threshold = spec.convergence
    start = float(problem.loss(problem.model).detach())
    run(opt, problem.model, problem.loss, steps)
    final = float(problem.loss(problem.model).detach())
    assert math.isfinite(final)
    assert final < threshold < start, f"{spec.name}: {start:.4f} -> {final:.4f}"
    assert opt.evaluations > steps
    assert opt.best_loss <= start


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_evaluation_budget_stops_the_steps(spec):
    model, loss = small_mlp()
    opt = build(spec, model.parameters(), max_evaluations=1)
    assert opt.step(lambda: loss(model)) is not None
    spent = opt.evaluations
    assert opt.exhausted and spent >= 1
    before = flat(model)
    calls = []
    assert opt.step(lambda: calls.append(1) or loss(model)) is None
    assert not calls and opt.evaluations == spent
    assert torch.equal(flat(model), before)


# -- 3. checkpoints (RNG included) -----------------------------------------------------------


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
    k, m = 2, 3
    model, loss = small_mlp()
    twin = copy.deepcopy(model)
    opt = build(spec, model.parameters())
    run(opt, model, loss, k)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert _plain(saved["opt"]), "optimizer state must hold only tensors and plain values"

    twin.load_state_dict(saved["model"])
    resumed = build(spec, twin.parameters(), seed=12345)  # the seed must come from the state
    resumed.load_state_dict(saved["opt"])
    assert resumed.evaluations == opt.evaluations
    run(opt, model, loss, m)
    run(resumed, twin, loss, m)
    assert torch.equal(flat(model), flat(twin))
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        for key, value in opt.state[a].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, resumed.state[b][key]), key
                assert value.dtype == resumed.state[b][key].dtype, key


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_same_seed_same_run_different_seed_different_run(spec):
    runs = []
    for seed in (3, 3, 4):
        model, loss = small_mlp()
        run(build(spec, model.parameters(), seed=seed), model, loss, 2)
        runs.append(flat(model))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


# -- 4. param groups, frozen parameters, schedulers -------------------------------------------


def _tensors(opt, params) -> list[torch.Tensor]:
    return [v.clone() for p in params for v in opt.state[p].values() if torch.is_tensor(v)]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_param_groups_are_honoured(spec):
    """A group whose step size (``lr``) is 0 stops moving while the other group moves: its
    parameters stay put (up to the rounding of undone in-place perturbations), or, for
    population methods whose centre is a statistic of the population, its population does."""
    model, loss = small_mlp()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    start = [p.detach().clone() for p in model.parameters()]
    opt = build(spec, [{"params": first}, {"params": second, "lr": 0.0}])
    assert opt.param_groups[1]["lr"] == 0.0
    run(opt, model, loss, 1)
    population = _tensors(opt, second)
    run(opt, model, loss, 2)
    assert not torch.equal(first[0], start[0])
    pairs = zip(second, start[2:], strict=True)
    still = all(torch.allclose(p, s, rtol=0, atol=1e-6) for p, s in pairs)
    frozen_population = bool(population) and all(
        torch.equal(a, b) for a, b in zip(population, _tensors(opt, second), strict=True)
    )
    assert still or frozen_population


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_frozen_parameters_are_skipped(spec):
    model, loss = small_mlp()
    model[2].bias.requires_grad_(False)
    frozen = model[2].bias.detach().clone()
    opt = build(spec, model.parameters())
    run(opt, model, loss, 2)
    assert torch.equal(model[2].bias, frozen)
    assert not opt.state.get(model[2].bias)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_lr_scheduler_changes_take_effect(spec):
    model, loss = small_mlp()
    opt = build(spec, model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < 2 else 0.0)
    start = flat(model)
    for _ in range(2):
        run(opt, model, loss, 1)
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0
    moved = flat(model)
    assert not torch.equal(start, moved)
    run(opt, model, loss, 2)
    # lr 0: nothing moves (population methods may re-centre on an equal-loss point: compare loss)
    torch.testing.assert_close(flat(model), moved, rtol=0, atol=1e-6)


# -- 5. non-finite losses ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_all_nonfinite_losses_skip_the_step_and_count_it(spec, bad):
    model, loss = small_mlp()
    opt = build(spec, model.parameters())
    run(opt, model, loss, 2)
    before_params = flat(model)
    before_state = copy.deepcopy(opt.state_dict()["state"])
    assert opt.step(lambda: torch.tensor(bad)) is None
    assert opt.skipped_steps == 1
    # in-place perturbations are undone by subtraction: at most a rounding step away
    torch.testing.assert_close(flat(model), before_params, rtol=0, atol=1e-6)
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, before_state[pid][key]), key
    run(opt, model, loss, 1)
    assert torch.isfinite(flat(model)).all()
    assert not torch.equal(flat(model), before_params)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_one_nonfinite_candidate_never_corrupts_state(spec):
    """A NaN for one candidate either ranks worst or skips the step; parameters and state
    stay finite and training goes on."""
    model, loss = small_mlp()
    opt = build(spec, model.parameters())
    calls = [0]

    def closure():
        calls[0] += 1
        return torch.tensor(math.nan) if calls[0] == 2 else loss(model)

    opt.step(closure)
    assert torch.isfinite(flat(model)).all()
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all()
    if opt.nonfinite_candidates == "skip":
        assert opt.skipped_steps == 1
    else:
        assert opt.skipped_steps == 0


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_nonfinite_loss_can_raise(spec):
    model, _ = small_mlp()
    opt = build(spec, model.parameters(), on_nonfinite="raise")
    before = flat(model)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(lambda: torch.tensor(math.inf))
    torch.testing.assert_close(flat(model), before, rtol=0, atol=1e-6)


# -- 6. dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bfloat16_parameters(spec):
    model, loss = small_mlp(torch.bfloat16)
    if not spec.supports_bf16:
        with pytest.raises(ValueError, match="bfloat16"):
            build(spec, model.parameters())
        return
    m32, loss32 = small_mlp()
    with torch.no_grad():
        for a, b in zip(m32.parameters(), model.parameters(), strict=True):
            a.copy_(b.float())
    opt = build(spec, model.parameters())
    run(opt, model, loss, 10)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    # the same run from the same (rounded) start in float32 reaches about the same loss
    run(build(spec, m32.parameters()), m32, loss32, 10)
    final, reference = float(loss(model).detach()), float(loss32(m32).detach())
    assert math.isfinite(final)
    assert final < reference + 0.15
    for state in opt.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim:
                assert value.dtype == torch.float32


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float64_follows_float32_trajectory(spec):
    m32, loss32 = small_mlp()
    m64, loss64 = small_mlp(torch.float64)
    with torch.no_grad():
        for a, b in zip(m32.parameters(), m64.parameters(), strict=True):
            b.copy_(a)
    run(build(spec, m32.parameters()), m32, loss32, 2)
    opt64 = build(spec, m64.parameters())
    run(opt64, m64, loss64, 2)
    torch.testing.assert_close(flat(m32), flat(m64), rtol=1e-3, atol=1e-4)
    for state in opt64.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim:
                assert value.dtype == torch.float64


# -- 7. metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_state_bytes_per_param_match_registry(spec):
    """With the class defaults (the population sizes the registry describes)."""
    model, loss = small_mlp()
    params = list(model.parameters())
    opt = optzoo.create(spec.name, params)
    run(opt, model, loss, 1)
    state_bytes = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    )
    n = sum(p.numel() for p in params)
    # 0-d step counters add a few bytes per tensor
    assert state_bytes / n == pytest.approx(spec.expected_state_bytes(params), abs=0.7)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_metadata_is_true(spec):
    assert spec.cls.__module__.startswith(f"optzoo.{spec.family}."), spec.cls.__module__
    doc = " ".join(spec.cls.__doc__.split())
    assert spec.paper.split(" (")[0] in doc, f"{spec.name}'s docstring must name its paper"
    assert str(spec.year) in doc
    assert spec.defaults


# -- the vectorized population form -------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_step_population_equals_step_with_closure(spec):
    """Evaluating the whole population in one vmap call gives the same update as one closure
    call per candidate."""
    results = []
    for vectorized in (False, True):
        model, loss = small_mlp(torch.float64)
        opt = build(spec, model.parameters())
        for _ in range(2):
            if vectorized:
                fn = optzoo.vectorized_loss(
                    model, lambda ps, model=model, loss=loss: loss(_Functional(model, ps))
                )
                opt.step_population(fn)
            else:
                opt.step(lambda model=model, loss=loss: loss(model))
        results.append(flat(model))
    torch.testing.assert_close(results[0], results[1], rtol=1e-9, atol=1e-10)


class _Functional:
    """Call ``model`` with the parameters in ``params`` (for ``vectorized_loss``)."""

    def __init__(self, model: nn.Module, params) -> None:
        self.model, self.params = model, params

    def __call__(self, x):
        return torch.func.functional_call(self.model, dict(self.params), (x,))
