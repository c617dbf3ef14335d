"""Weight loss landscapes of adversarially trained models (Wu, Xia, Wang, NeurIPS 2020, Sec. 3).

g(alpha) = rho(w + alpha d): the adversarial loss along filter-normalized random directions
(Li et al. 2018), with the adversarial examples regenerated at every perturbed weight; 2-D
surfaces; flatness scalars (Stutz et al. 2021); the measures that may predict the robust
generalization gap; :func:`compute_landscape` and :func:`compute_measures` (cached, resumable
result files, the library calls behind ``awp landscape`` and ``awp measures``); plots.
Imports ``awp`` only, never ``analysis``. Each name keeps its home module too
(``landscape.curve.weight_loss_curve``, ``landscape.measures.MEASURES``, ...).
"""
from landscape.batch import compute_landscapes, measure_checkpoints
from landscape.compute import LandscapeConfig, LandscapeResult, compute_landscape
from landscape.curve import weight_loss_curve
from landscape.directions import DIRECTIONS, interpolation_direction, orthogonalize, random_direction
from landscape.flatness import average_sharpness, curvature, sharpness, worst_case_sharpness
from landscape.io import read_result
from landscape.measure_run import MeasureConfig, MeasuresResult, compute_measures
from landscape.measures import MEASURES, measure
from landscape.plot import plot_curves, plot_surface
from landscape.surface import weight_loss_surface

__all__ = ["LandscapeConfig", "LandscapeResult", "compute_landscape", "compute_landscapes", "read_result",
           "MeasureConfig", "MeasuresResult", "compute_measures", "measure_checkpoints", "MEASURES", "measure",
           "DIRECTIONS", "random_direction", "interpolation_direction", "orthogonalize",
           "weight_loss_curve", "weight_loss_surface", "sharpness", "curvature", "average_sharpness",
           "worst_case_sharpness", "plot_curves", "plot_surface"]
