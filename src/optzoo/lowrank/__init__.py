"""Memory-efficient low-rank optimizers: the gradient of each matrix is projected to a subspace.

All of them run on one engine, ``optzoo.lowrank.engine.LowRankOptimizer`` (projector x inner
rule x residual rule x optional preconditioner); the names below fix each paper's defaults.
"""

from optzoo.lowrank.dct_galore import DCTGaLore
from optzoo.lowrank.engine import LowRankOptimizer as LowRankOptimizer
from optzoo.lowrank.fira import Fira
from optzoo.lowrank.frugal import FRUGAL
from optzoo.lowrank.galore import GaLore
from optzoo.lowrank.natural_galore import NaturalGaLore

__all__ = ["FRUGAL", "DCTGaLore", "Fira", "GaLore", "NaturalGaLore"]
