"""Weight loss landscapes of adversarially trained models (Wu, Xia, Wang, NeurIPS 2020, Sec. 3).

g(alpha) = rho(w + alpha d): the adversarial loss along filter-normalized random directions
(Li et al. 2018), with the adversarial examples regenerated at every perturbed weight; 2-D
surfaces; flatness scalars (Stutz et al. 2021); :func:`compute_landscape` (cached, resumable result
files, the library call behind ``awp landscape``); plots.
Imports ``awp`` only, never ``analysis``.
"""
from landscape.compute import LandscapeConfig, LandscapeResult, compute_landscape
from landscape.directions import interpolation_direction, orthogonalize, random_direction

__all__ = ["LandscapeConfig", "LandscapeResult", "compute_landscape", "random_direction",
           "interpolation_direction", "orthogonalize"]
