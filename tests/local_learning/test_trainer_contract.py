"""The contract every registered local-learning trainer (oracle ``"layer_local"``) keeps: the
gradient-oracle contract of ``tests/test_contract.py`` adapted to trainers that own their loop.

Parametrized over the registry: registering a trainer puts it under every check here. For a
trainer, ``spec.convergence = (budget, error_threshold)``: with ``spec.test_hyperparameters``
(which set the budget) it must reach a held-out error rate below ``error_threshold`` on the
reference problem below.
"""

from __future__ import annotations

import copy
import inspect
import math
import re

import pytest
import torch

import optzoo
from optzoo.registry import REGISTRY, AlgorithmSpec

SPECS = [s for s in REGISTRY.values() if s.oracle == "layer_local"]
IDS = [s.name for s in SPECS]
FEATURES, CLASSES = 12, 4


def reference_problem(seed: int = 0):
    """Four Gaussian classes in 12 dimensions (centres 2.5 apart on average, unit noise):
    240 training and 120 held-out points; a linear model reaches about 95% held-out."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.25 * torch.randn(CLASSES, FEATURES, generator=g)

    def draw(n):
        labels = torch.arange(n) % CLASSES
        return centres[labels] + torch.randn(n, FEATURES, generator=g), labels

    return draw(240), draw(120)


def build(spec: AlgorithmSpec, **overrides):
    return spec.cls(**{**spec.test_hyperparameters, **overrides})


def fresh_model(spec: AlgorithmSpec, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return spec.cls.reference_model(FEATURES, CLASSES)


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_there_are_trainers_under_contract():
    assert {"TargetProjectionSGD", "NoProp", "GradientBoostingTrainer"} <= set(IDS)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_metadata(spec):
    assert spec.family == "local_learning"
    assert spec.cls.__name__ in optzoo.__all__
    assert spec.paper in spec.cls.__doc__.replace("\n    ", " ")
    assert str(spec.year) in spec.cls.__doc__


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_invalid_hyperparameters_name_the_parameter(spec):
    signature = inspect.signature(spec.cls.__init__).parameters
    cases = [
        ({name: bad}, name)
        for name, interval in spec.cls.hyperparameter_ranges.items()
        if name in signature
        for bad in interval.outside_examples()
    ]
    cases += [(dict(kw), msg) for kw, msg in spec.invalid_hyperparameters]
    assert len(cases) >= 3
    for kwargs, fragment in cases:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            spec.cls(**kwargs)
    spec.cls()  # the defaults are valid


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_reaches_stated_error_on_reference_problem(spec):
    train, test = reference_problem()
    model = fresh_model(spec)
    trainer = build(spec)
    result = trainer.fit(model, train, eval_data=test)
    _, threshold = spec.convergence
    error = 1.0 - trainer.evaluate(model, test)
    assert error < threshold, f"{spec.name}: held-out error {error:.3f} >= {threshold}"
    assert result.history, "no history recorded"
    assert all({"loss", "accuracy", "eval_accuracy"} <= set(h) for h in result.history)
    assert result.history[-1]["eval_accuracy"] == pytest.approx(1.0 - error)
    assert result.history[-1]["accuracy"] > result.history[0]["accuracy"] or (
        result.history[0]["accuracy"] > 0.9
    )
    assert result.skipped_updates == 0
    # metadata is true: the optimizer state kept per parameter
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = spec.expected_state_bytes(list(model.parameters()))
    assert result.state_bytes / numel == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_same_seed_same_result_other_seed_other_result(spec):
    train, _ = reference_problem()
    runs = []
    for seed in (3, 3, 4):
        model = fresh_model(spec)
        result = build(spec, seed=seed).fit(model, train)
        runs.append((flat(model), [h["loss"] for h in result.history]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def _bad_data():
    (x, y), _ = reference_problem()
    nan = x.clone()
    nan[3, 2] = math.nan
    inf = x.clone()
    inf[0, 0] = math.inf
    return [
        ((x, y[:-1]), "inputs but"),
        ((x[0], y), "shape"),
        ((x, y.float()), "labels must be a 1-D integer"),
        ((x, y[:, None]), "labels must be a 1-D integer"),
        ((nan, y), "NaN"),
        ((inf, y), "NaN or infinite"),
        ((x[:0], y[:0]), "empty"),
        ((x, y + CLASSES), "outputs"),
        ((x, -y - 1), "non-negative"),
        (x, "pair"),
        ((x, y, y), "pair"),
    ]


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bad_data_gives_a_clear_error_and_leaves_the_model_alone(spec):
    model = fresh_model(spec)
    before = flat(model).clone()
    trainer = build(spec)
    for data, fragment in _bad_data():
        with pytest.raises(ValueError, match=re.escape(fragment)):
            trainer.fit(model, data)
    (x, y), _ = reference_problem()
    with pytest.raises(ValueError, match="eval_data"):
        trainer.fit(model, (x, y), eval_data=(x[:, :3], y))
    assert torch.equal(flat(model), before)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_huge_inputs_never_corrupt_the_model(spec):
    (x, y), _ = reference_problem()
    model = fresh_model(spec)
    huge = x / x.abs().max() * 3e38  # finite inputs whose activations overflow
    result = build(spec).fit(model, (huge, y))
    assert bool(torch.isfinite(flat(model)).all()), "non-finite values reached the model"
    losses = [h["loss"] for h in result.history]
    assert result.skipped_updates > 0 or all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_non_finite_losses_are_skipped_counted_and_never_reach_the_model(spec):
    (x, y), _ = reference_problem()
    model = fresh_model(spec)
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus, "the reference model has no ReLU to poison"
    hooks = [m.register_forward_hook(lambda mod, inp, out: out * math.nan) for m in relus]
    try:
        result = build(spec).fit(model, (x, y))
    finally:
        for h in hooks:
            h.remove()
    assert bool(torch.isfinite(flat(model)).all()), "non-finite values reached the model"
    assert result.skipped_updates > 0, "the skipped non-finite updates were not counted"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_fit_trains_in_place_and_evaluate_agrees_with_predict(spec):
    train, test = reference_problem()
    model = fresh_model(spec)
    before = copy.deepcopy(model)
    trainer = build(spec)
    trainer.fit(model, train)
    assert not torch.equal(flat(model), flat(before))
    predicted = trainer.predict(model, test[0])
    assert predicted.shape == test[1].shape and predicted.dtype == torch.int64
    assert trainer.evaluate(model, test) == pytest.approx(
        float((predicted == test[1]).double().mean())
    )


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_inputs_that_do_not_fit_the_model_give_a_clear_error(spec):
    (x, y), _ = reference_problem()
    with pytest.raises(ValueError, match="do not fit the model"):
        build(spec).fit(fresh_model(spec), (x[:, :5], y))
