"""Tests of the benchmark workloads: determinism from the seed, the Task interface, residuals,
functional losses, that each workload trains under a simple optimiser, the MNIST-1D generator,
the corpus, frozen targets, and that nothing touches the network."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
from torch.func import vmap

from optzoo.bench import workloads as workloads_package
from optzoo.bench.workloads import (
    SUITES,
    WORKLOADS,
    Task,
    Workload,
    char_lm,
    digits,
    get_workload,
    least_squares,
    load_targets,
    logistic,
    mnist1d,
    nondiff,
    register_workload,
    regression,
    sklearn_data,
    target_for,
    workloads_in_suite,
)
from optzoo.bench.workloads.base import EpochBatches, derive_seed
from optzoo.bench.workloads.targets import Target, dump_targets, parse_targets
from optzoo.registry import ORACLES

NAMES = sorted(WORKLOADS)
# Workloads whose batch does not depend on the seed (full batch, or no data at all).
SEED_FREE_BATCHES = {"least_squares", "rosenbrock_10", "rosenbrock_30"} | {
    "rastrigin_10",
    "rastrigin_30",
}
# Quick variants share their full-suite workload's build, so they are trained through it.
GRADIENT_WORKLOADS = [
    n for n in NAMES if "gradient" in WORKLOADS[n].oracles and not n.endswith("_quick")
]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def parameters(task: Task) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.model.named_parameters()}


def same(a: object, b: object) -> bool:
    """Exact equality of batches: tensors, tuples of tensors, or None."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    return a is None and b is None


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_holds_every_required_workload_with_valid_metadata():
    required = {
        "mnist1d_mlp",
        "mnist1d_cnn",
        "digits_cnn",
        "char_lm",
        "least_squares",
        "least_squares_noisy",
        "regression_1d",
        "diabetes_mlp",
        "logistic",
        "rosenbrock_10",
        "rastrigin_10",
        "nondiff_digits",
    }
    assert required <= set(WORKLOADS)
    for name, workload in WORKLOADS.items():
        assert workload.name == name
        assert workload.oracles <= set(ORACLES) and workload.oracles
        assert workload.suite <= set(SUITES) and workload.suite
        assert workload.description and workload.metric
        assert workload.eval_every <= workload.max_steps
    quick = {w.name: w for w in workloads_in_suite("quick")}
    full = {w.name: w for w in workloads_in_suite("full")}
    # The quick suite keeps the workloads adaptive methods are not expected to win, as
    # short-budget variants of full-suite workloads (own names, own targets).
    assert set(quick) == {
        f"{n}_quick"
        for n in ("mnist1d_cnn", "mnist1d_mlp", "least_squares_noisy", "nondiff_digits")
    }
    for name, variant in quick.items():
        original = full[name.removesuffix("_quick")]
        assert variant.build is original.build and variant.oracles <= original.oracles
        assert ("loss_closure" in variant.oracles) == (name == "nondiff_digits_quick")
        assert variant.metric == original.metric and variant.max_steps < original.max_steps
        assert variant.suite == {"quick"}


def test_get_workload_is_case_insensitive_and_suggests_close_names():
    assert get_workload("MNIST1D_MLP") is WORKLOADS["mnist1d_mlp"]
    with pytest.raises(ValueError, match="did you mean 'rosenbrock_10'"):
        get_workload("rosenbrok_10")
    with pytest.raises(ValueError, match="unknown suite"):
        workloads_in_suite("medium")


def test_register_workload_refuses_collisions_and_bad_metadata():
    existing = WORKLOADS["logistic"]
    clash = Workload(**{**existing.__dict__, "name": "LOGISTIC"})
    with pytest.raises(ValueError, match="collides"):
        register_workload(clash)
    assert WORKLOADS["logistic"] is existing
    with pytest.raises(ValueError, match="oracles"):
        Workload(**{**existing.__dict__, "oracles": frozenset({"telepathy"})})
    with pytest.raises(ValueError, match="suite"):
        Workload(**{**existing.__dict__, "suite": frozenset({"medium"})})
    with pytest.raises(ValueError, match="max_steps"):
        Workload(**{**existing.__dict__, "max_steps": 0})


# --------------------------------------------------------------------------------------------
# Every workload: determinism, interface, residuals, functional loss
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_task_and_different_seed_different_task(name):
    workload = WORKLOADS[name]
    rng_before = torch.random.get_rng_state()
    first, again, other = workload.build(0), workload.build(0), workload.build(1)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "build touched the global RNG"

    p_first, p_again, p_other = parameters(first), parameters(again), parameters(other)
    assert all(torch.equal(p_first[k], p_again[k]) for k in p_first)
    assert any(not torch.equal(p_first[k], p_other[k]) for k in p_first)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in p_first.values())

    # Batches are a pure function of (seed, step), in any order of requests (an epoch boundary
    # included: the largest step here is past the first epoch of every data set).
    steps = [0, 1, 7, 3, 5000, 0]
    batches = [first.batch(s) for s in steps]
    for step, batch in zip(reversed(steps), reversed(batches), strict=True):
        assert same(batch, again.batch(step))
    assert same(batches[0], batches[-1])
    if name in SEED_FREE_BATCHES:
        assert same(first.batch(0), other.batch(0))
    else:
        assert not same(first.batch(0), other.batch(0))
        assert not same(first.batch(0), first.batch(1))


@pytest.mark.parametrize("name", NAMES)
def test_task_interface_loss_and_metric_range(name):
    workload = WORKLOADS[name]
    task = workload.build(0)
    assert isinstance(task, Task)
    loss = task.loss(task.batch(0))
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    metric = task.evaluate()
    assert isinstance(metric, float) and math.isfinite(metric)
    if workload.metric == "error_rate":
        assert 0.0 <= metric <= 1.0
        assert metric > 0.5  # an untrained classifier is near chance (90% error)
    else:
        assert metric >= 0.0
    # evaluate neither needs nor records gradients
    assert all(p.grad is None for p in task.model.parameters())
    assert hasattr(task, "residuals") == ("per_sample_residuals" in workload.oracles)


@pytest.mark.parametrize(
    "name", [n for n in NAMES if "per_sample_residuals" in WORKLOADS[n].oracles]
)
def test_residuals_are_per_sample_and_their_mean_square_is_the_loss(name):
    task = WORKLOADS[name].build(0)
    batch = task.batch(0)
    residuals = task.residuals(batch)
    assert residuals.ndim == 1 and torch.isfinite(residuals).all()
    if isinstance(batch, tuple):  # one residual per sample of the batch
        assert residuals.shape[0] == batch[0].shape[0]
    torch.testing.assert_close(task.loss(batch), residuals.square().mean())
    assert ("per_sample_losses" in WORKLOADS[name].oracles) == hasattr(task, "per_sample_losses")
    torch.testing.assert_close(task.per_sample_losses(batch), residuals.square())
    # and they carry gradients (least-squares methods differentiate them)
    residuals.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_functional_loss_equals_loss_and_uses_the_given_parameters(name):
    task = WORKLOADS[name].build(0)
    batch = task.batch(0)
    own = dict(task.model.named_parameters())
    torch.testing.assert_close(task.functional_loss(own, batch), task.loss(batch))

    kept = parameters(task)
    g = torch.Generator().manual_seed(0)
    moved = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in kept.items()}
    with torch.no_grad():
        moved_loss = task.functional_loss(moved, batch)
        assert not torch.equal(moved_loss, task.loss(batch))
        for k, p in task.model.named_parameters():  # the model itself is untouched
            assert torch.equal(p, kept[k])
        # loading the moved parameters into the model gives the same value
        for k, p in task.model.named_parameters():
            p.copy_(moved[k])
        torch.testing.assert_close(task.loss(batch), moved_loss)


@pytest.mark.parametrize("name", [n for n in NAMES if "loss_closure" in WORKLOADS[n].oracles])
def test_functional_loss_vectorizes_over_a_population(name):
    """Population methods evaluate many parameter vectors in one vmap call."""
    task = WORKLOADS[name].build(0)
    batch = task.batch(0)
    g = torch.Generator().manual_seed(1)
    population = {
        k: v.detach() + 0.1 * torch.randn((3, *v.shape), generator=g)
        for k, v in task.model.named_parameters()
    }
    with torch.no_grad():
        together = vmap(lambda p: task.functional_loss(p, batch))(population)
        one_by_one = torch.stack(
            [
                task.functional_loss({k: v[i] for k, v in population.items()}, batch)
                for i in range(3)
            ]
        )
    assert together.shape == (3,)
    torch.testing.assert_close(together, one_by_one)


# --------------------------------------------------------------------------------------------
# Training makes progress
# --------------------------------------------------------------------------------------------

# (optimizer, learning rate, steps) per gradient workload. Each is a fixed-LR setting that the
# workload's own LR sweep found to train well, and the step counts come from measured curves:
# on seeds 0, 1 and 2 the eval metric after these steps was at most 0.82x its initial value
# (mnist1d_mlp and mnist1d_cnn, 0.79-0.82x, are the closest to the 0.9x bound asserted below)
# and the loss on the first batch at most 0.80x, so a failure means the workload no longer
# trains, not bad luck. regression_1d sits on a plateau at first (the MLP fits the mean, then
# the wiggles), hence its longer run.
TRAINING = {
    "mnist1d_mlp": ("adam", 1e-2, 20),
    "mnist1d_cnn": ("adam", 1e-2, 20),
    "digits_cnn": ("adam", 3e-3, 20),
    "char_lm": ("adam", 3e-3, 20),
    "least_squares": ("sgd", 0.3, 20),
    "least_squares_noisy": ("sgd", 0.01, 20),
    "regression_1d": ("adam", 1e-2, 150),
    "diabetes_mlp": ("adam", 3e-3, 20),
    "logistic": ("sgd", 0.1, 20),
    "rosenbrock_10": ("adam", 0.1, 20),
    "rosenbrock_30": ("adam", 0.1, 20),
    "rastrigin_10": ("adam", 0.1, 20),
    "rastrigin_30": ("adam", 0.1, 20),
}


def test_every_gradient_workload_has_a_training_check():
    assert set(TRAINING) == set(GRADIENT_WORKLOADS)


@pytest.mark.parametrize("name", GRADIENT_WORKLOADS)
def test_loss_and_metric_decrease_under_a_simple_optimizer(name):
    kind, lr, steps = TRAINING[name]
    task = WORKLOADS[name].build(0)
    params = list(task.model.parameters())
    if kind == "adam":
        optimizer = torch.optim.Adam(params, lr=lr)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    first = task.batch(0)
    with torch.no_grad():
        loss_before, metric_before = float(task.loss(first)), task.evaluate()
    for step in range(steps):
        optimizer.zero_grad()
        loss = task.loss(task.batch(step))
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        loss_after, metric_after = float(task.loss(first)), task.evaluate()
    assert loss_after < 0.9 * loss_before
    assert metric_after < 0.9 * metric_before


def test_nondifferentiable_network_has_zero_gradients_but_a_population_method_trains_it():
    task = get_workload("nondiff_digits").build(0)
    loss = task.loss(task.batch(0))
    loss.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in task.model.parameters())

    # A plain evolution strategy (antithetic Gaussian perturbations, rank-weighted) using only
    # loss values through the vectorised functional loss: 40 steps of a population of 32 took
    # the loss on a fixed batch from 2.35-2.49 to 1.05-1.28 on seeds 0-2 (and the test error
    # from 0.94 to 0.37 on seed 0) when this test was written, so a 0.8x bound leaves room.
    params = parameters(task)
    g = torch.Generator().manual_seed(0)
    fixed = task.batch(0)
    with torch.no_grad():
        before = float(task.functional_loss(params, fixed))
        for step in range(40):
            batch = task.batch(step)
            half = {k: torch.randn((16, *v.shape), generator=g) for k, v in params.items()}
            noise = {k: torch.cat([e, -e]) for k, e in half.items()}
            candidates = {k: params[k] + 0.05 * noise[k] for k in params}
            losses = vmap(lambda p, b=batch: task.functional_loss(p, b))(candidates)
            weights = 0.5 - losses.argsort().argsort().float() / 31
            for k in params:
                params[k] += 0.05 / (32 * 0.05) * torch.tensordot(weights, noise[k], dims=1)
        after = float(task.functional_loss(params, fixed))
    assert after < 0.8 * before


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def test_mnist1d_has_the_published_shapes_balance_and_normalisation():
    data = mnist1d.generate_mnist1d()
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    labels = torch.cat([data.y_train, data.y_test])
    assert torch.bincount(labels, minlength=10).tolist() == [500] * 10
    assert torch.bincount(data.y_test, minlength=10).min() >= 70  # shuffled before the split
    everything = torch.cat([data.x_train, data.x_test])
    assert abs(float(everything.mean())) < 1e-4 and abs(float(everything.std()) - 1) < 1e-3
    templates = mnist1d.normalized_templates()
    assert templates.shape == (10, 12) and np.allclose(templates[:, 0], 0)
    # Deterministic in its seed, different across seeds.
    mnist1d.generate_mnist1d.cache_clear()
    assert torch.equal(mnist1d.generate_mnist1d().x_train, data.x_train)
    assert not torch.equal(mnist1d.generate_mnist1d(seed=1).x_train, data.x_train)


def test_mnist1d_is_hard_for_a_linear_classifier():
    """Translation, scaling and noise make MNIST-1D non-linear: published logistic regression
    reaches ~32% test accuracy against ~68% for an MLP and ~94% for a CNN. A ridge-regression
    classifier on our data lands in the same low range (24% when this was written), while the
    same generator without its translation step gives 87%."""
    data = mnist1d.generate_mnist1d()

    def with_bias(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.ones(len(x), 1)], dim=1).double()

    x = with_bias(data.x_train)
    targets = torch.nn.functional.one_hot(data.y_train, 10).double()
    weights = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(41, dtype=torch.float64), x.T @ targets)
    accuracy = float((with_bias(data.x_test) @ weights).argmax(1).eq(data.y_test).double().mean())
    assert 0.15 < accuracy < 0.45


def test_mnist1d_smoothing_and_resampling_helpers():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((4, 30))
    resampled = mnist1d._resample_rows(rows, 17)
    expected = np.stack([mnist1d._resample(r, 17) for r in rows])
    np.testing.assert_allclose(resampled, expected, atol=1e-12)
    smooth = mnist1d._gaussian_smooth_rows(rows, 2.0)
    assert smooth.shape == rows.shape
    np.testing.assert_allclose(mnist1d._gaussian_smooth_rows(np.ones((1, 30)), 2.0), 1.0)
    assert smooth.std() < 0.6 * rows.std()  # smoothing removes most of white noise's variance


def test_digits_and_diabetes_splits():
    split = digits.load_digits_split()
    assert split.x_train.shape == (1347, 1, 8, 8) and split.x_test.shape == (450, 1, 8, 8)
    assert float(split.x_train.min()) >= 0.0 and float(split.x_train.max()) <= 1.0
    assert torch.bincount(split.y_test, minlength=10).min() >= 40  # stratified
    diabetes = regression.load_diabetes_split()
    assert diabetes.x_train.shape == (342, 10) and diabetes.x_test.shape == (100, 10)
    torch.testing.assert_close(diabetes.y_train.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)


def test_bundled_scikit_learn_files_match_its_public_loaders(monkeypatch):
    from sklearn.datasets import load_diabetes, load_digits

    pixels, labels = sklearn_data.digits_arrays()
    public = load_digits()
    assert np.array_equal(pixels, public.data) and np.array_equal(labels, public.target)
    features, target = sklearn_data.diabetes_arrays()
    public = load_diabetes(scaled=False)
    assert np.array_equal(features, public.data) and np.array_equal(target, public.target)
    # Without the files (a future layout), the public loaders are used.
    monkeypatch.setattr(sklearn_data, "bundled_file", lambda name: None)
    assert np.array_equal(sklearn_data.digits_arrays()[0], pixels)
    assert np.array_equal(sklearn_data.diabetes_arrays()[1], target)


def test_char_corpus_split_and_vocabulary():
    train, validation = char_lm.load_corpus()
    total = len(train) + len(validation)
    assert total > 400_000 and abs(len(validation) / total - 0.1) < 1e-3
    assert int(train.max()) < char_lm.VOCAB_SIZE and int(train.min()) >= 0
    assert float((train == char_lm.OTHER).float().mean()) < 0.01  # nearly all of it is ASCII
    text = "def f(x):\n\treturn x  # é"
    ids = char_lm.encode(text)
    decoded = "".join(char_lm.VOCABULARY[i] if i < char_lm.OTHER else "?" for i in ids.tolist())
    assert decoded == "def f(x):\n?return x  # ?"
    task = char_lm.CharLMTask(0)
    inputs, targets = task.batch(0)
    assert inputs.shape == targets.shape == (char_lm.BATCH_SIZE, char_lm.CONTEXT)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the next characters
    # An untrained model predicts nearly uniformly: its loss is close to log(vocabulary).
    assert abs(task.evaluate() - char_lm.UNIFORM_LOSS) < 0.1


def test_least_squares_problem_conditioning_and_exact_excess_loss():
    problem = least_squares.make_problem()
    a = problem["A"]
    hessian = 2 * a.T @ a / a.shape[0]
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert float(eigenvalues.max() / eigenvalues.min()) == pytest.approx(least_squares.CONDITION)
    task = least_squares.build_exact(0)
    with torch.no_grad():
        task.model.weight.copy_(problem["w_star"].float().reshape(1, -1))
        assert task.evaluate() < 1e-8
        # excess loss = loss - optimal loss (the float32 loss agrees to its precision)
        optimal = float((a @ problem["w_star"] - problem["b"]).square().mean())
        task.model.weight.add_(0.1)
        assert task.evaluate() == pytest.approx(float(task.loss(task.batch(0))) - optimal, rel=1e-3)


def test_logistic_objective_includes_the_penalty():
    task = logistic.LogisticTask(0)
    with torch.no_grad():
        task.model.weight.zero_()
        task.model.bias.zero_()
        assert task.evaluate() == pytest.approx(math.log(2), rel=1e-6)
        task.model.weight.fill_(1.0)
        x, y = task.batch(0)
        logits, penalty = task.model(x)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        assert float(penalty) == pytest.approx(0.5 * logistic.REGULARIZATION * 32)
        torch.testing.assert_close(task.loss((x, y)), expected + penalty)


def test_epoch_batches_cover_every_sample_once_per_epoch():
    values = torch.arange(10)
    batches = EpochBatches((values, -values), 3, seed=4)
    assert batches.batches_per_epoch == 3
    epoch = [batches(s) for s in range(3)]
    assert all(torch.equal(x, -y) for x, y in epoch)  # the tensors stay aligned
    seen = torch.cat([x for x, _ in epoch])
    assert len(set(seen.tolist())) == 9  # one sample left out per epoch (drop last)
    assert torch.equal(seen, batches.order(0)[:9])
    assert not torch.equal(torch.cat([batches(s)[0] for s in range(3, 6)]), seen)
    assert torch.equal(batches(1)[0], epoch[1][0])  # back to an earlier epoch
    assert derive_seed(3, "init") == derive_seed(3, "init") != derive_seed(4, "init")
    with pytest.raises(ValueError):
        EpochBatches((values,), 11, 0)
    with pytest.raises(ValueError):
        EpochBatches((values, values[:5]), 2, 0)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def test_targets_file_covers_every_workload_version_and_metric():
    targets = load_targets()
    assert set(targets) == set(WORKLOADS)
    for name, workload in WORKLOADS.items():
        entry = targets[name]
        assert entry.version == workload.version and entry.metric == workload.metric
        if entry.target is None:
            assert "not yet set" in entry.how
        else:  # set by the target-setting pass, which says how: from the NAdamW reference,
            # or, where no baseline serves the workload, the registered algorithms that do
            assert entry.target > 0 and "median over" in entry.how
            reference = "NAdamW" if "gradient" in workload.oracles else "registered algorithms"
            assert reference in entry.how
        assert target_for(workload, targets) == entry.target
    # every workload of the quick suite has a frozen target
    for workload in workloads_in_suite("quick"):
        assert targets[workload.name].target is not None


def test_targets_round_trip_and_are_ignored_for_another_version():
    workload = WORKLOADS["logistic"]
    targets = {"logistic": Target(workload.version, workload.metric, 0.375, "median of 9 seeds")}
    parsed = parse_targets(dump_targets(targets))
    assert parsed == targets and target_for(workload, parsed) == 0.375
    stale = {"logistic": Target(workload.version + 1, workload.metric, 0.375, "old")}
    assert target_for(workload, stale) is None
    for bad in (
        {"schema": 2, "workloads": {}},
        {"schema": 1, "workloads": {"x": {"version": 1, "metric": "loss", "target": None}}},
        {
            "schema": 1,
            "workloads": {"x": {"version": 1, "metric": "m", "target": "low", "how": ""}},
        },
        {
            "schema": 1,
            "workloads": {"x": {"version": 1, "metric": "m", "target": math.inf, "how": ""}},
        },
    ):
        with pytest.raises(ValueError):
            parse_targets(json.dumps(bad))


# --------------------------------------------------------------------------------------------
# Offline
# --------------------------------------------------------------------------------------------


def test_nothing_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # Rebuild every data set from scratch under the patch.
    for loader in (
        mnist1d.generate_mnist1d,
        digits.load_digits_split,
        char_lm.load_corpus,
        least_squares.make_problem,
        logistic.make_data,
        regression.make_1d,
        regression.load_diabetes_split,
        nondiff.centered_digits,
    ):
        loader.cache_clear()
    for workload in WORKLOADS.values():
        task = workload.build(0)
        assert torch.isfinite(task.loss(task.batch(0)))
        assert math.isfinite(task.evaluate())
    assert workloads_package.__doc__
