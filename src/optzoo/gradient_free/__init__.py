"""Gradient-free optimizers: they need loss values only (no backward pass).

All share one ask/tell lifecycle (``base.LossValueOptimizer``): ``step(closure)`` evaluates
candidates one closure call at a time; ``step_population(loss_fn)`` evaluates a whole population
in one vectorized call (``vectorized_loss`` builds ``loss_fn`` for an ``nn.Module``).
"""

from optzoo.gradient_free.base import vectorized_loss
from optzoo.gradient_free.cbo import CBO
from optzoo.gradient_free.deep_ga import DeepGA
from optzoo.gradient_free.evolution_strategy import EvolutionStrategy
from optzoo.gradient_free.polystep import PolyStep
from optzoo.gradient_free.zeroth_order import ZerothOrder

__all__: list[str] = [
    "CBO",
    "DeepGA",
    "EvolutionStrategy",
    "PolyStep",
    "ZerothOrder",
    "vectorized_loss",
]
