"""Where a figure goes: PNG, PDF and the CSV it was drawn from, side by side.

:func:`save_figure` is the one writer of every figure of ``analysis`` (the paper's figures of
:mod:`analysis.figures`, ``fig_measures`` of :mod:`analysis.ranking`), through the atomic writes of
:mod:`awp.io`. A CSV row that belongs to a run carries the provenance of that run's numbers: the
attack that measured its gap (train minus test robust accuracy, Wu, Xia, Wang 2020, Sec. 3) and
the attack, split and sample count of its landscape (:data:`PROVENANCE`).

A figure is drawn first (:class:`Drawing`: the figure and its table) and saved after, so that
:func:`analysis.figures.make_figures` can draw them all before it writes any: a bad input found
while drawing the last figure leaves the output folder as it was.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from analysis.style import STYLE
from awp.io import atomic_savefig, atomic_write_text

# catalog column -> the CSV column that states it for the row's run
PROVENANCE = {"attack": "gap_attack", "landscape_attack": "landscape_attack",
              "landscape_split": "landscape_split", "landscape_samples": "landscape_samples"}


class FigureSkipped(Exception):
    """A figure the available runs do not allow; the message says what is missing."""


class FigureList(list):
    """The files written (Paths), with ``notes``: one line per figure drawn or skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []


@dataclass
class Drawing:
    """A drawn figure not yet saved: its file name stem, the figure and the table it was drawn from."""

    name: str
    figure: Figure
    table: pd.DataFrame


def with_provenance(table: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the :data:`PROVENANCE` columns of each row's run (from ``catalog``) appended,
    replacing any it had; a table without a ``run`` column is returned as it is."""
    if "run" not in table.columns:
        return table
    cols = [c for c in PROVENANCE if c in catalog.columns]
    per_run = (catalog[["run", *cols]].sort_values("run").groupby("run", sort=False).first()
               .rename(columns=PROVENANCE).reset_index())
    table = table.drop(columns=[c for c in per_run.columns if c != "run" and c in table.columns])
    return table.merge(per_run, on="run", how="left")


def save_figure(fig: Figure, table: pd.DataFrame, out_dir: str | Path, name: str,
                catalog: pd.DataFrame | None = None) -> list[Path]:
    """Write ``out_dir/name``.png (200 dpi), .pdf and .csv (``table``, with the provenance of its
    runs when ``catalog`` is given); returns the three paths.

    Saved under the house style (:data:`analysis.style.STYLE`), since matplotlib creates tick
    labels as it draws; laid out tightly unless the figure has a layout engine of its own.
    """
    if catalog is not None:
        table = with_provenance(table, catalog)
    out = Path(out_dir)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    with matplotlib.rc_context(STYLE):
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        atomic_savefig(fig, paths[0], dpi=200, bbox_inches="tight")
        atomic_savefig(fig, paths[1], bbox_inches="tight")
    atomic_write_text(paths[2], table.to_csv(index=False))
    return paths
