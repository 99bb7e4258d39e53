"""diffGrad: Adam whose step is damped where consecutive gradients agree."""

from __future__ import annotations

from optzoo._core.optimizer import Implementation, NonfinitePolicy, ParamsT, RuleOptimizer
from optzoo._core.rules import AddDecayedWeights, ScaleByAdam, chain, sigmoid
from optzoo._core.validation import NON_NEGATIVE, POSITIVE, UNIT_OPEN_RIGHT
from optzoo.registry import register


class DiffGradFriction:
    """Multiplies the incoming direction by diffGrad's friction coefficient
    xi = sigmoid(|g_prev - g|), elementwise in [0.5, 1), computed from the raw gradient; then
    remembers g as the next step's g_prev (zero before the first step). No hyperparameters.
    Compiled, the sigmoid is ``rules.sigmoid``'s inline form (within 1.3 float32 ulps of the
    exact one here): a call to the vectorized ``exp`` made the step 1.2x slower."""

    buffers = ("previous_grad",)

    def __call__(self, update, param, grad, state, hp):
        previous = state["previous_grad"]
        friction = sigmoid((previous - grad).abs_())
        previous.copy_(grad)
        return update * friction


@register(
    family="first_order",
    paper="diffGrad: An Optimization Method for Convolutional Neural Networks",
    year=2020,
    oracle="gradient",
    state_bytes_per_param=12,
    fast_path=True,
    elementwise=True,
    test_hyperparameters={"lr": 0.05},
)
class DiffGrad(RuleOptimizer):
    """diffGrad (Dubey et al., "diffGrad: An Optimization Method for Convolutional Neural
    Networks", IEEE Transactions on Neural Networks and Learning Systems 31(11), 2020; early
    access and arXiv 1909.11015 in 2019).

    Adam whose bias-corrected first moment is scaled, per coordinate, by a friction coefficient
    xi in [0.5, 1) that grows with the change of the gradient since the previous step: where
    consecutive gradients agree (flat region or near an optimum) the step shrinks towards half
    of Adam's; where the gradient changes fast the step stays close to Adam's. One more
    full-size buffer than Adam (the previous gradient), so 12 bytes per float32 parameter::

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t)
        xi = 1 / (1 + exp(-|g_prev - g|))          (g_prev = 0 at the first step)
        p = p - lr * (xi * m_hat / (sqrt(v_hat) + eps) + weight_decay * p)
        g_prev = g

    Defaults from the paper: lr 1e-3, betas (0.9, 0.999), eps 1e-8. weight_decay (default 0) is
    decoupled, AdamW-style, and does not enter the moments or xi.

    The authors' code (github.com/shivram1987/diffGrad) differs from the paper's equation, and
    this class follows the paper: (1) the code adds eps to sqrt(v) before bias correction,
    i.e. it divides by sqrt(v_hat) + eps / sqrt(1 - b2^t), where the paper divides by
    sqrt(v_hat) + eps; (2) its weight decay is an L2 term added to the gradient, which then
    also enters the moments and the friction coefficient; (3) ``diffGrad.py``, the version the
    published experiments used, stores the gradient tensor itself rather than a copy, so when
    gradients are zeroed and accumulated in place g_prev is g and xi is 0.5 from the second
    step on (the authors say so in the code); their ``diffGrad_v2.py`` copies the gradient, as
    the paper's equation intends and as done here.
    """

    hyperparameter_ranges = {
        "lr": NON_NEGATIVE,
        "betas": UNIT_OPEN_RIGHT,
        "eps": POSITIVE,
        "weight_decay": NON_NEGATIVE,
    }
    rule = chain(ScaleByAdam(), DiffGradFriction(), AddDecayedWeights(), name="diffgrad")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        implementation: Implementation = "auto",
        on_nonfinite: NonfinitePolicy = "skip",
    ) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults, implementation=implementation, on_nonfinite=on_nonfinite)
