"""Writing a study's results: tables with their seed spread, paired intervals over seeds and subjects, figures.

Every study writes through these, so every study gets the same treatment of seeds: with one
training seed a study writes its own table as its paper lays it out; with several it writes
``<table>_seeds.csv`` (one row per seed), ``<table>.csv`` (mean over seeds, the sd over seeds
beside each main metric: :func:`uadlab.evaluation.analysis.seed_summary`) and ``paired.csv``
(each of the study's comparisons in per-subject DICE and AUPRC, resampling seeds and subjects:
:func:`uadlab.evaluation.analysis.paired_difference_seeds`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from uadlab.data.io import atomic_write
from uadlab.errors import UadlabWarning
from uadlab.evaluation import analysis
from uadlab.viz import figures as viz

__all__ = ["write_text", "write_csv", "write_table", "write_seed_table", "paired_table", "save_figure"]


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (replacing it); return ``path``."""
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(text)
    return path


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` to ``path`` as CSV without its index, atomically; return ``path``."""
    with atomic_write(path, overwrite=True) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def write_table(folder: Path, name: str, frame: pd.DataFrame, markdown: Callable[[pd.DataFrame], str]) -> dict:
    """``<name>.csv`` and ``<name>.md`` of a table; returns their paths keyed by file name."""
    return {f"{name}.csv": write_csv(folder / f"{name}.csv", frame),
            f"{name}.md": write_text(folder / f"{name}.md", markdown(frame))}


def write_seed_table(folder: Path, name: str, rows: pd.DataFrame, *, keys: Sequence[str], means: Sequence[str],
                     spread: Sequence[str], markdown: Callable[[pd.DataFrame], str]) -> dict:
    """A table over several seeds: ``<name>_seeds.csv`` (every seed), ``<name>.csv`` and ``.md`` (mean, sd over seeds).

    Args:
        folder: the study's folder.
        name: the table's name, e.g. ``"lambert2021"``.
        rows: one row per key and seed, column ``seed`` included.
        keys, means, spread: as :func:`uadlab.evaluation.analysis.seed_summary`.
        markdown: renders the summary (the mean in each metric's own column).

    Returns:
        The three paths keyed by file name.
    """
    summary = analysis.seed_summary(rows, keys=keys, means=means, spread=spread)
    return {f"{name}_seeds.csv": write_csv(folder / f"{name}_seeds.csv", rows),
            **write_table(folder, name, summary, markdown)}


def paired_table(path: Path, pairs: Sequence[tuple[str, str, dict, dict]]) -> tuple[pd.DataFrame, list[str]]:
    """``paired.csv``: each comparison ``a - b`` in per-subject DICE and AUPRC, resampling seeds and subjects.

    Args:
        path: where to write it.
        pairs: ``(name a, name b, {seed: subjects table of a}, {seed: subjects table of b})``.

    Returns:
        The table (columns ``experiment, baseline, metric`` and those of
        :func:`~uadlab.evaluation.analysis.paired_difference_seeds`) and one line per comparison that could
        not be made (e.g. no subject defined in every run), each also a :class:`~uadlab.errors.UadlabWarning`.
    """
    frames, skipped = [], []
    for name, baseline, a, b in pairs:
        for metric in ("dice", "auprc"):
            try:
                frames.append(analysis.paired_difference_seeds(a, b, metric=metric)
                              .assign(experiment=name, baseline=baseline, metric=metric))
            except ValueError as error:  # say so, keep the study's results
                skipped.append(f"{name} vs {baseline}, {metric}: {error}")
                warnings.warn(f"not compared: {skipped[-1]}", UadlabWarning, stacklevel=2)
    paired = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["experiment", "baseline", "cohort", "metric"])
    front = ["experiment", "baseline"]
    write_csv(path, paired[front + [c for c in paired.columns if c not in front]])
    return paired, skipped


def save_figure(fig, path: Path) -> Path:
    """Write a figure with :func:`uadlab.viz.figures.save_figure` and free a matplotlib figure's memory."""
    viz.save_figure(fig, path)
    if hasattr(fig, "clf"):
        fig.clf()
    return path
