"""The compiled fast path's mechanics: how tensors are chunked into compiled calls, and that
every kind of chunk (same-shaped runs, mixed small tensors, fused non-finite skip) computes
what the eager reference computes."""

from __future__ import annotations

import pytest
import torch

import optzoo
from optzoo._core import optimizer as core

needs_compiler = pytest.mark.skipif(
    not core.compiler_available(torch.device("cpu")),
    reason="no C++ compiler for torch.compile on this machine",
)


def test_chunks_split_same_shaped_runs_evenly_and_pool_small_tensors():
    big = [torch.empty(256, 256)] * 12 + [torch.empty(512, 128)] * 3
    small = [torch.empty(1024), torch.empty(8, 8), torch.empty(3)] * 30
    runs = core._chunks(big + small)
    lengths = sorted(len(r) for r in runs)
    # 12 same-shaped tensors as 6 + 6 (not 8 + 4), 3 of another shape in one run, and the
    # 90 small tensors of three shapes pooled into two runs of 45
    assert lengths == [3, 6, 6, 45, 45]
    assert sorted(i for r in runs for i in r) == list(range(len(big) + len(small)))
    for run in runs:
        if run[0] < len(big):  # runs of large tensors hold one shape only
            assert len({big[i].shape for i in run}) == 1


def test_chunks_never_mix_dtypes():
    tensors = [torch.empty(10), torch.empty(10, dtype=torch.float64)] * 3
    for run in core._chunks(tensors):
        assert len({tensors[i].dtype for i in run}) == 1


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 8)] * 7 + [(4, 16)] * 2 + [(5,), (3, 2), (7,)]
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def _train_with_a_bad_step(opt, params: list[torch.Tensor], poison) -> None:
    """Four steps on seeded random gradients; the third gets a non-finite entry (``poison``
    writes it) and must be skipped, leaving every parameter and state tensor bit-identical."""
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        if step == 2:
            poison(params)
            before = [p.detach().clone() for p in params]
            state = [v.clone() for s in opt.state.values() for v in s.values()]
        opt.step()
        if step == 2:
            assert opt.skipped_steps == 1
            assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
            after = [v for s in opt.state.values() for v in s.values()]
            assert all(torch.equal(a, b) for a, b in zip(state, after, strict=True))
    assert opt.skipped_steps == 1
    assert not torch.equal(params[0], before[0])  # the last step was taken


@needs_compiler
@pytest.mark.parametrize("name", ["NAdamW", "Lion"])
def test_compiled_chunks_equal_reference_and_skip_nonfinite_steps(name, monkeypatch):
    # torch.compile's chunks (on the CPU these rules otherwise run as C loops: see
    # test_cloops.py). Small limits, so that tiny tensors exercise every kind of run: 7
    # same-shaped tensors in runs of 2, 2 and 3; two of another shape; three small tensors
    # pooled.
    monkeypatch.setattr(core, "C_LOOPS", False)
    monkeypatch.setattr(core, "SMALL_NUMEL", 64)
    monkeypatch.setattr(core, "CHUNK", 3)
    results = []
    for implementation in ("reference", "compiled"):
        params = _params(0)
        opt = optzoo.create(name, params, lr=1e-2, implementation=implementation)
        _train_with_a_bad_step(opt, params, lambda ps: ps[3].grad[1].fill_(float("nan")))
        results.append([p.detach().clone() for p in params])
    for ref, fast in zip(*results, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


@needs_compiler
def test_chunk_plan_is_made_once_per_set_of_parameters_with_gradients(monkeypatch):
    monkeypatch.setattr(core, "C_LOOPS", False)
    made = []
    real = core.chunk_plan
    monkeypatch.setattr(
        core, "chunk_plan", lambda rule, params: made.append(len(params)) or real(rule, params)
    )
    params = _params(0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt = optzoo.create("Lion", params[:9], implementation="compiled")
    opt.step()
    opt.step()
    assert made == [9]
    params[0].grad = None  # another set of parameters has gradients: a plan of its own
    opt.step()
    assert made == [9, 8]
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    assert made == [9, 8]  # the first set again: its plan is kept
    opt.add_param_group({"params": params[9:]})  # plans are made again for every group
    opt.step()
    assert made == [9, 8, 9, 3]


@needs_compiler
@pytest.mark.parametrize("name", ["AdaGradNorm", "DoG"])
@pytest.mark.parametrize("groups", [1, 2])
def test_norm_rules_skip_nonfinite_steps_from_their_own_norm(name, groups, monkeypatch):
    params = _params(0)
    spec = [{"params": params[:5]}, {"params": params[5:]}] if groups == 2 else params
    opt = optzoo.create(name, spec, implementation="compiled")
    if groups == 1:  # the update's own norm is the check: no separate read of the gradients

        def no_separate_check(*args):
            raise AssertionError("the gradients were read for a separate check")

        monkeypatch.setattr(core, "finite_flag", no_separate_check)
        monkeypatch.setattr(core, "_finite_flag", no_separate_check)
    _train_with_a_bad_step(opt, params, lambda ps: ps[-1].grad[0].fill_(float("inf")))


@needs_compiler
def test_norm_rule_with_its_own_check_still_skips_a_nonfinite_loss():
    params = _params(0)
    opt = optzoo.create("AdaGradNorm", params, implementation="compiled")
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(lambda: torch.tensor(float("nan")))
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, _params(0), strict=True))
    opt.step(lambda: torch.tensor(1.0))
    assert opt.skipped_steps == 1
    assert not torch.equal(params[0], _params(0)[0])


@needs_compiler
def test_compiled_sigmoid_is_within_a_few_ulps_of_the_exact_one():
    from optzoo._core.optimizer import inductor_options
    from optzoo._core.rules import sigmoid

    # built as the fast path builds its kernels (fused multiply-adds included)
    compiled = torch.compile(sigmoid, fullgraph=True, dynamic=False, options=inductor_options())
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=g) * 5, torch.linspace(-120, 120, 100_001)])
    exact = torch.sigmoid(x.double())
    ulps = (compiled(x).double() - exact).abs() / exact / torch.finfo(torch.float32).eps
    normal = exact > torch.finfo(torch.float32).tiny
    assert ulps[normal].max() < 2.5
    assert ulps[x >= 0].max() < 1.5  # diffGrad's friction: the sigmoid of a magnitude
    edges = torch.tensor([float("inf"), -float("inf"), 0.0, 1e30, -1e30, float("nan")])
    out = compiled(edges)
    assert out[:5].tolist() == [1.0, 0.0, 0.5, 1.0, 0.0]
    assert out[5].isnan()
    assert torch.equal(sigmoid(x), torch.sigmoid(x))  # eager: torch's own


def test_inductor_options_drop_what_this_torch_does_not_know(monkeypatch):
    from optzoo._core import optimizer

    monkeypatch.setattr(optimizer, "_OPTIONS", {"size_asserts": False, "no_such_option": 1})
    optimizer.inductor_options.cache_clear()
    try:
        assert optimizer.inductor_options() == {"size_asserts": False}
    finally:
        monkeypatch.undo()
        optimizer.inductor_options.cache_clear()
    assert optimizer.inductor_options() == optimizer._OPTIONS  # torch 2.13 knows both
    both = {**optimizer._OPTIONS, **optimizer._TENSOR_BY_TENSOR}
    assert optimizer.inductor_options(tensor_by_tensor=True) == both


def test_only_trust_ratio_chains_run_tensor_by_tensor():
    from optzoo.first_order import LARS, NAdamW

    assert LARS.rule.tensor_by_tensor and not NAdamW.rule.tensor_by_tensor
    large, small = [torch.zeros(core.SMALL_NUMEL)] * 2, [torch.zeros(8)] * 3
    plan = core.chunk_plan(LARS.rule, large + small)
    assert [ids for ids, _ in plan] == [[0, 1], [2, 3, 4]]
    # the large tensors' graph is compiled with _TENSOR_BY_TENSOR, the small ones' is not
    for tensors, by_tensor, (_, graph) in zip((large, small), (True, False), plan, strict=True):
        key = (id(LARS.rule), "run_rule", core._signature(tensors), by_tensor)
        assert core._COMPILED[key] is graph
    core.chunk_plan(NAdamW.rule, large)
    assert core._COMPILED[(id(NAdamW.rule), "run_rule", core._signature(large), False)]
