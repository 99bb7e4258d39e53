"""Curvature-aware optimizers: orthogonalized momentum, matrix-free inverse Hessians, Sven."""

from optzoo.curvature.fismo import FISMO
from optzoo.curvature.mfac import MFAC
from optzoo.curvature.muon import Muon
from optzoo.curvature.regularized_newton import RegularizedNewton
from optzoo.curvature.sven import Sven

__all__: list[str] = ["FISMO", "MFAC", "Muon", "RegularizedNewton", "Sven"]
