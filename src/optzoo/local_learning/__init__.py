"""Local-learning trainers: layer-local signals instead of end-to-end backpropagation.

Each trainer owns its loop: ``trainer.fit(model, (inputs, labels))`` trains ``model`` in place
and returns a ``FitResult`` (per-epoch loss and accuracy); ``trainer.evaluate`` scores it.
"""

from optzoo.local_learning._trainer import FitResult, LocalTrainer
from optzoo.local_learning.boosting import GradientBoostingTrainer
from optzoo.local_learning.noprop import NoProp, NoPropNetwork
from optzoo.local_learning.tpsgd import TargetProjectionSGD

__all__: list[str] = [
    "FitResult",
    "GradientBoostingTrainer",
    "LocalTrainer",
    "NoProp",
    "NoPropNetwork",
    "TargetProjectionSGD",
]
