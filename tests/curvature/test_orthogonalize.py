import pytest
import torch

from optzoo.curvature.orthogonalize import MUON_COEFFICIENTS, newton_schulz, shape_scale


def quintic_polar(matrix: torch.Tensor, steps: int = 5, coefficients=MUON_COEFFICIENTS):
    """Newton-Schulz computed independently, on the singular values: ``U p^steps(S/||G||_F) V^T``
    with ``p(s) = a s + b s^3 + c s^5`` (the iteration acts on each singular value alone)."""
    a, b, c = coefficients
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    s = s / (torch.linalg.matrix_norm(matrix) + 1e-7)
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return (u * s) @ vh


def _random(rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (7, 7)])
def test_newton_schulz_acts_on_singular_values_only(shape):
    matrix = _random(*shape)
    torch.testing.assert_close(newton_schulz(matrix), quintic_polar(matrix), rtol=1e-10, atol=1e-12)


def test_five_muon_steps_leave_singular_values_near_one():
    s = torch.linalg.svdvals(newton_schulz(_random(32, 64, seed=1)))
    assert float(s.min()) > 0.6 and float(s.max()) < 1.25


def test_cubic_coefficients_converge_to_the_exact_polar_factor():
    matrix = _random(5, 9, seed=2)
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    got = newton_schulz(matrix, steps=60, coefficients=(1.5, -0.5, 0.0))
    torch.testing.assert_close(got, u @ vh, rtol=0, atol=1e-10)


def test_tall_matrices_are_handled_through_their_transpose():
    matrix = _random(12, 4, seed=3)
    torch.testing.assert_close(newton_schulz(matrix), newton_schulz(matrix.T).T)


def test_zero_matrix_stays_zero_and_dtype_is_kept():
    out = newton_schulz(torch.zeros(3, 4))
    assert out.dtype == torch.float32 and torch.equal(out, torch.zeros(3, 4))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.ones(3))
    with pytest.raises(ValueError, match="steps"):
        newton_schulz(torch.ones(2, 2), steps=-1)


def test_shape_scale_is_sqrt_of_aspect_ratio_for_tall_matrices_only():
    assert shape_scale(64, 16) == 2.0
    assert shape_scale(16, 64) == 1.0
