"""optzoo: optimization algorithms for training neural networks, and a benchmark to pick one.

Every algorithm is registered (``optzoo.available()``) and can be built by name with
``optzoo.create(name, params, **hyperparameters)`` or imported directly. Each family package
lists its public names in its own ``__all__``; they are re-exported here.
"""

from optzoo import (
    curvature,
    diagnostics,
    first_order,
    gradient_free,
    local_learning,
    lowrank,
)
from optzoo import schedules as schedules
from optzoo import straight_through as straight_through
from optzoo.curvature import *  # noqa: F403
from optzoo.first_order import *  # noqa: F403
from optzoo.gradient_free import *  # noqa: F403
from optzoo.local_learning import *  # noqa: F403
from optzoo.lowrank import *  # noqa: F403
from optzoo.registry import AlgorithmSpec, available, create, get

__version__ = "0.1.0"

__all__ = [
    "AlgorithmSpec",
    "available",
    "create",
    "diagnostics",
    "get",
    "schedules",
    "straight_through",
    *curvature.__all__,
    *first_order.__all__,
    *gradient_free.__all__,
    *local_learning.__all__,
    *lowrank.__all__,
]
