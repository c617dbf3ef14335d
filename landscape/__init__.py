"""Weight loss landscapes of adversarially trained models (Wu, Xia, Wang, NeurIPS 2020, Sec. 3).

g(alpha) = rho(w + alpha d): the adversarial loss along filter-normalized random directions
(Li et al. 2018), with the adversarial examples regenerated at every perturbed weight; 2-D
surfaces; flatness scalars (Stutz et al. 2021); result files that resume; plots; ``awp landscape``.
Imports ``awp`` only, never ``analysis``.
"""
from landscape.directions import interpolation_direction, orthogonalize, random_direction

__all__ = ["random_direction", "interpolation_direction", "orthogonalize"]
