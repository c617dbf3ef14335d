"""Analysis: runs catalog, robust generalization gap, flatness-gap correlation and the figures of
Wu, Xia, Wang (NeurIPS 2020, Fig. 1 and Sec. 4-5), and the offline ``awp demo``.

The names a notebook needs, importable from here and from their modules::

    from analysis import collect_runs, unique_checkpoints, correlate, make_figures
    catalog = collect_runs("runs/", "landscapes/")            # one row per checkpoint, gap + flatness
    correlate(unique_checkpoints(catalog), "sharpness", "gap")  # Pearson / Spearman / Kendall with CIs
    make_figures(catalog, "figures/")                         # every figure of FIGURES the runs allow

Imports ``landscape`` and ``awp``, never the other way round.
"""
from analysis.catalog import collect_runs, read_metrics, unique_checkpoints
from analysis.correlation import correlate, correlation
from analysis.demo import run_demo
from analysis.figures import FIGURES, make_figures
from analysis.output import save_figure
from analysis.overfitting import overfitting_stats
from analysis.ranking import plot_measure_ranking, rank_catalog, rank_measures
from analysis.readers import read_config
from analysis.rows import early_stopping, last_checkpoints
from analysis.seeds import mean_sd, over_seeds, paired_difference

__all__ = ["FIGURES", "collect_runs", "correlate", "correlation", "early_stopping", "last_checkpoints",
           "make_figures", "mean_sd", "over_seeds", "overfitting_stats", "paired_difference", "plot_measure_ranking",
           "rank_catalog", "rank_measures", "read_config", "read_metrics", "run_demo", "save_figure",
           "unique_checkpoints"]
