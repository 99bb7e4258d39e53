"""The CPU fast path's generated C loops (``optzoo._core.cloops``): which rules and tensors
get them, what the generated code looks like, and that it computes what the eager reference
computes wherever the contract suite does not look (large tensors, float64, threads, changed
hyperparameters, fallbacks)."""

from __future__ import annotations

import pytest
import torch

import optzoo
from optzoo._core import cloops
from optzoo._core import optimizer as core
from optzoo.first_order import LAMB, LARS, DiffGrad, Lion, NAdamW

needs_cc = pytest.mark.skipif(cloops.compiler() is None, reason="no C compiler on the path")
pytestmark = needs_cc


def _plan(opt) -> object:
    """The C plan of the optimizer's (single) set of parameters with gradients."""
    (layout,) = opt._layouts.values()
    return layout[2]


def _steps(name: str, shapes, implementation: str, steps: int = 3, dtype=torch.float32, **hp):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]
    opt = optzoo.create(name, params, implementation=implementation, **hp)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
        opt.step()
    return opt, params


@pytest.mark.parametrize("rule", [Lion, NAdamW, DiffGrad, LAMB, LARS])
def test_elementwise_chains_become_c_loops_with_one_loop_per_pass(rule):
    p = torch.zeros(4, 3)
    opt = rule([p], implementation="reference")
    p.grad = torch.ones_like(p)
    opt.step()
    hp = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    source = cloops.generate(cloops.trace(rule.rule, p, opt.state[p], hp), 2 + len(opt.state[p]))
    element_loops = source.count("for (int64_t i = ")
    # the trust-ratio rules sum two norms in a first pass (blocks of float sums added in
    # double), then update; the others are one pass
    assert element_loops == (2 if rule in (LAMB, LARS) else 1)
    assert ("reduction(+:" in source) == (rule in (LAMB, LARS))
    # hyperparameters and bias corrections are locals computed before the loops
    first_loop = source.index("for (int64_t")
    assert "pow(" not in source[first_loop:] and "H[" not in source[first_loop:]
    if rule in (LAMB, LARS):  # the first pass stores the new state, the update loads it:
        last_loop = source[source.rindex("for (int64_t i = 0; i < n") :]
        assert "t1[i]" not in last_loop  # the gradient is not read again
        assert "t3[i] = " in source[: source.rindex("for (int64_t i = 0; i < n")]


class _RowNormalized:
    """A transform with a reduction over one dimension: not elementwise, not a full sum."""

    buffers = ()

    def __call__(self, update, param, grad, state, hp):
        return update / update.norm(dim=-1, keepdim=True)


def test_rules_outside_what_c_can_express_stay_on_torch_compile():
    from optzoo._core.rules import chain

    class RowNormalizedSGD(core.RuleOptimizer):
        rule = chain(_RowNormalized(), name="row_normalized")

    p = torch.randn(8, 8, requires_grad=True)
    q = p.detach().clone()
    opt = RowNormalizedSGD([p], {"lr": 0.1}, implementation="compiled")
    p.grad = torch.randn_like(p)
    opt.step()
    with pytest.raises(cloops.Unsupported, match="shape"):
        hp = {"lr": 0.1}
        cloops.generate(cloops.trace(opt.rule, p, opt.state[p], hp), 2 + len(opt.state[p]))
    assert _plan(opt) is False  # torch.compile ran it
    assert "row_normalized" in cloops.last_fallback and "shape" in cloops.last_fallback
    expected = q - 0.1 * p.grad / p.grad.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(p.detach(), expected)


@pytest.mark.parametrize("name", ["LAMB", "LARS", "NAdamW"])
def test_large_tensors_equal_the_reference(name):
    # 2**20 + 3 elements: 256 blocks of float sums and a ragged end, a tail the vector loop
    # does not cover, and a bias of one element
    shapes = [(1 << 20) + 3, (1,)]
    fast, fast_params = _steps(name, shapes, "compiled", lr=1e-2)
    assert isinstance(_plan(fast), cloops.CPlan)
    _, ref_params = _steps(name, shapes, "reference", lr=1e-2)
    for a, b in zip(fast_params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["LAMB", "DiffGrad"])
def test_float64_parameters_run_as_double_loops(name):
    shapes = [(7, 5), (3,)]
    fast, fast_params = _steps(name, shapes, "compiled", dtype=torch.float64, lr=1e-2)
    assert isinstance(_plan(fast), cloops.CPlan)
    _, ref_params = _steps(name, shapes, "reference", dtype=torch.float64, lr=1e-2)
    for a, b in zip(fast_params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_threads_split_the_tensors_and_compute_the_same():
    shapes = [(64, 64)] * 5 + [(9,)] * 4
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, fast_params = _steps("LARS", shapes, "compiled", lr=1e-2)
    finally:
        torch.set_num_threads(threads)
    _, ref_params = _steps("LARS", shapes, "reference", lr=1e-2)
    for a, b in zip(fast_params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_changed_learning_rate_needs_no_new_plan_a_changed_flag_does():
    params = [torch.randn(6, 4, requires_grad=True)]
    opt = optzoo.create("LARS", params, implementation="compiled", lr=0.1)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ref = optzoo.create("LARS", ref_params, implementation="reference", lr=0.1)
    plans = []
    for step, (lr, trust) in enumerate([(0.1, True), (0.01, True), (0.01, False)]):
        for o, ps in ((opt, params), (ref, ref_params)):
            o.param_groups[0]["lr"] = lr
            o.param_groups[0]["trust_ratio"] = trust
            for p in ps:
                p.grad = torch.full_like(p, 0.5 + step)
            o.step()
        plans.append(_plan(opt))
        torch.testing.assert_close(params[0], ref_params[0], rtol=1e-5, atol=1e-6)
    assert plans[0] is plans[1] and plans[2] is not plans[1]


def test_tensors_the_loops_cannot_take_fall_back_to_torch_compile():
    # a transposed parameter is not contiguous; bfloat16 is not a C type here
    for params in (
        [torch.randn(6, 4).t().requires_grad_()],
        [torch.randn(5, dtype=torch.bfloat16)],
    ):
        params = [p.detach().requires_grad_() for p in params]
        ref = [p.detach().clone().requires_grad_() for p in params]
        opt = optzoo.create("Lion", params, implementation="compiled", lr=0.1)
        ref_opt = optzoo.create("Lion", ref, implementation="reference", lr=0.1)
        for p, q in zip(params, ref, strict=True):
            p.grad = torch.ones_like(p)
            q.grad = torch.ones_like(q)
        opt.step()
        ref_opt.step()
        assert _plan(opt) is False  # no C plan: the chunk plan of torch.compile ran
        torch.testing.assert_close(params[0], ref[0])


def test_without_a_compiler_the_rule_runs_through_torch_compile(monkeypatch):
    monkeypatch.setattr(cloops, "compiler", lambda: None)
    opt, params = _steps("NAdamW", [(4, 4)], "compiled")
    assert _plan(opt) is False
    _, ref_params = _steps("NAdamW", [(4, 4)], "reference")
    torch.testing.assert_close(params[0], ref_params[0], rtol=1e-5, atol=1e-6)


def test_a_loaded_state_gets_a_new_plan():
    opt, params = _steps("NAdamW", [(4, 4)], "compiled")
    first = _plan(opt)
    opt.load_state_dict(opt.state_dict())
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert isinstance(_plan(opt), cloops.CPlan) and _plan(opt) is not first


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_finds_every_kind_of_non_finite_value(dtype):
    tensors = [torch.randn(1000, dtype=dtype), torch.randn(3, 7, dtype=dtype)]
    assert cloops.all_finite(tensors) is True
    for bad in (float("inf"), -float("inf"), float("nan")):
        for t in tensors:
            for index in (0, -1, t.numel() // 2 + 1):  # each quarter read; the tail of 21
                saved = t.view(-1)[index].item()
                t.view(-1)[index] = bad
                assert cloops.all_finite(tensors) is False
                t.view(-1)[index] = saved
    assert cloops.all_finite([torch.randn(4, 4).t()]) is None  # not contiguous: can't tell


def test_the_generated_sigmoid_is_within_a_few_ulps_of_the_exact_one():
    """diffGrad's friction, as its C loop computes it (``rules.sigmoid``'s inline form)."""
    from optzoo._core.rules import sigmoid

    class Sigmoid:  # a one-transform rule whose update is sigmoid(gradient), lr 1: p -= it
        buffers = ()

        def __call__(self, update, param, grad, state, hp):
            return sigmoid(grad)

    from optzoo._core.rules import chain

    rule = chain(Sigmoid(), name="sigmoid")
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=g) * 5, torch.linspace(-120, 120, 100_001)])
    edges = torch.tensor([float("inf"), -float("inf"), 0.0, 1e30, -1e30, float("nan")])
    x = torch.cat([x, edges])
    p = torch.zeros_like(x)
    state = {"step": torch.zeros(())}
    plan = cloops.plan_for(rule, [p], [state], {"lr": 1.0})
    plan([p], [x], [state], {"lr": 1.0})
    out = -p[: -len(edges)]
    exact = torch.sigmoid(x[: -len(edges)].double())
    ulps = (out.double() - exact).abs() / exact / torch.finfo(torch.float32).eps
    normal = exact > torch.finfo(torch.float32).tiny
    assert ulps[normal].max() < 2.5
    assert ulps[x[: -len(edges)] >= 0].max() < 1.5
    assert (-p[-len(edges) : -1]).tolist() == [1.0, 0.0, 0.5, 1.0, 0.0]
    assert p[-1].isnan()
    assert state["step"].item() == 1


def test_c_loops_are_cached_by_source():
    source = cloops._ALL_FINITE
    first = cloops.compile_source(source, "optzoo_all_finite", restype=__import__("ctypes").c_int)
    assert cloops.compile_source(source, "optzoo_all_finite") is first
    assert core.C_LOOPS  # on by default


class _ManyOps:
    """A made-up transform that uses every operation ``generate`` writes, on values that
    reach their edges (negative, zero, large)."""

    buffers = ("average",)

    def __call__(self, update, param, grad, state, hp):
        average = state["average"]
        average.lerp_(grad, 0.3)
        positive = grad.abs() + 0.5
        x = torch.where(grad > 0, positive.log(), (-positive).exp())
        x = torch.maximum(x, grad.sign() * 0.25) + torch.minimum(x, param.clamp(-1.0, 2.0))
        x = x + param.clamp_min(0.0) - param.clamp(max=0.5) + positive.sqrt().reciprocal()
        x = x + positive.rsqrt() * positive.pow(3) + positive.pow(average.abs()) / 7
        x = x.addcdiv(grad, positive, value=0.5).sub(average, alpha=2.0).round() * 0.125
        both = (grad >= 0) & (param < 1) | (grad == 0) | (grad != grad) & (param <= 0)
        return torch.where(both, -x, x) * hp["scale"]


def test_every_operation_the_generator_writes_computes_what_torch_does():
    from optzoo._core.rules import chain

    class ManyOps(core.RuleOptimizer):
        rule = chain(_ManyOps(), name="many_ops")

    g = torch.Generator().manual_seed(0)
    start = torch.randn(4097, generator=g) * 3
    start[:3] = torch.tensor([0.0, -0.0, 1e-30])
    results = []
    for implementation in ("reference", "compiled"):
        p = start.clone().requires_grad_()
        opt = ManyOps([p], {"lr": 0.1, "scale": 0.5}, implementation=implementation)
        grad_rng = torch.Generator().manual_seed(1)
        for _ in range(3):
            p.grad = torch.randn(p.shape, generator=grad_rng) * 4
            p.grad[:2] = 0.0
            opt.step()
        results.append(p.detach())
    assert isinstance(_plan(opt), cloops.CPlan)  # every operation was written as C
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)


def test_a_replaced_state_tensor_gets_a_new_plan_not_a_misread():
    params = [torch.randn(5, 3, requires_grad=True)]
    ref_params = [params[0].detach().clone().requires_grad_()]
    opt = optzoo.create("NAdamW", params, implementation="compiled", lr=0.1)
    ref = optzoo.create("NAdamW", ref_params, implementation="reference", lr=0.1)
    for step in range(3):
        for o, p in ((opt, params[0]), (ref, ref_params[0])):
            p.grad = torch.full_like(p, 1.0 + step)
            o.step()
            if step == 0:  # the moments replaced by transposed (non-contiguous) copies: the
                for key in ("exp_avg", "exp_avg_sq"):  # loops must not read them row by row
                    old = o.state[p][key]
                    o.state[p][key] = torch.empty(3, 5).t().copy_(old)
        if step == 0:
            first = _plan(opt)
    assert isinstance(first, cloops.CPlan) and _plan(opt) is False  # torch.compile took over
    torch.testing.assert_close(params[0], ref_params[0], rtol=1e-5, atol=1e-6)


class _Swap:
    """Returns old memory + update and remembers the update: the update pass needs the
    buffer's old value, so its new value must not be stored by the norms' pass."""

    buffers = ("memory",)

    def __call__(self, update, param, grad, state, hp):
        old = state["memory"].clone()
        state["memory"].copy_(update)
        return old + update


def test_a_buffer_whose_old_value_a_later_pass_needs_is_stored_last():
    from optzoo._core.rules import TrustRatio, chain

    class SwapLARS(core.RuleOptimizer):
        rule = chain(_Swap(), TrustRatio(), name="swap_trust_ratio")

    results = []
    for implementation in ("reference", "compiled"):
        p = torch.linspace(-1, 1, 999).requires_grad_()
        opt = SwapLARS([p], {"lr": 0.1}, implementation=implementation)
        for step in range(3):
            p.grad = torch.linspace(0.5, -2, 999) * (step + 1)
            opt.step()
        results.append((p.detach(), opt.state[p]["memory"]))
    assert isinstance(_plan(opt), cloops.CPlan)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
