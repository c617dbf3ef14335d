"""The house style of the figures (sizes for a two-column paper page) and the gap's axis label.

A module of its own so that plotting code (:mod:`analysis.figures`, :mod:`analysis.ranking`) shares
it without importing one another.
"""
from __future__ import annotations

STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7}
GAP_LABEL = "robust gap (train − test robust acc., pp)"
