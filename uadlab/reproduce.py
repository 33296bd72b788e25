"""The main job: reproduce Table 1 and Figs. 4–7 of Bengs et al. 2021 on one data set.

``uadlab reproduce --profile smoke|lab|paper --data phantom|DIR --out results/`` runs, in order:

1. **Data** — build the phantom (``data_manifests/phantom.yaml``) or a real manifest into
   ``OUT/data`` with :func:`uadlab.data.build_dataset`, or reuse an already built folder.
2. **Training** — every Table 1 experiment (14 by default: 2D/3D × None, Patch/Cube, Multi, Half ×
   0/n) on 100 % of the healthy training split, plus the data-set-size runs (Fig. 5) for
   :data:`DATA_SIZE_EXPERIMENTS` at the profile's fractions. Runs live in ``OUT/runs/<name>`` and are
   resumed, so rerunning skips finished experiments and continues a stopped one.
3. **Evaluation** — each run on each lesion cohort's test split with the threshold from that
   cohort's validation split (:func:`uadlab.evaluation.evaluate_run`), written to
   ``OUT/evaluation/<name>/``.
4. **Tables and figures** — ``OUT/table1.csv`` (experiment, dataset, dice_d, dice_s_mean,
   dice_s_std, auprc, threshold), ``OUT/table1.md`` (laid out like the paper's Table 1) and
   ``OUT/figures/`` (Fig. 4 lesion size, Fig. 5 data size, Fig. 6 slice-wise detection, Fig. 7
   example cases).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from uadlab import analysis, viz
from uadlab.data import build_dataset, load_dataset
from uadlab.erasing import EXPERIMENTS, parse_experiment
from uadlab.errors import DatasetError
from uadlab.evaluation import evaluate_run
from uadlab.io import atomic_write
from uadlab.profiles import get_profile
from uadlab.training import TrainConfig, train

__all__ = ["DATA_SIZE_EXPERIMENTS", "PHANTOM_MANIFEST", "reproduce", "run_name"]

#: Manifest of the default data set (shipped beside the package in the source tree).
PHANTOM_MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "phantom.yaml"

#: Experiments of the data-set-size study (Fig. 5): the 2D and 3D baselines and the best 3D erasing.
DATA_SIZE_EXPERIMENTS: tuple[str, ...] = ("2D-None", "3D-None", "3D-Cube-n")

_TABLE1_COLUMNS = ["experiment", "dataset", "dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold"]


def run_name(experiment: str, fraction: float = 1.0) -> str:
    """Folder name of a run: the experiment name, with ``@<percent>`` for a training-set fraction.

    >>> run_name("3D-Cube-n"), run_name("2D-None", 0.2)
    ('3D-Cube-n', '2D-None@20')
    """
    return experiment if fraction == 1.0 else f"{experiment}@{round(fraction * 100)}"


def _resolve_data(data: str | Path, out: Path, profile: str, root: Path | None, progress: bool) -> Path:
    """Return a built data-set folder for ``data``: ``phantom``, a manifest YAML, or a built folder."""
    data_path = Path(data)
    if str(data) == "phantom":
        return build_dataset(PHANTOM_MANIFEST, out / "data", profile=profile, progress=progress)
    if data_path.suffix in (".yaml", ".yml"):
        return build_dataset(data_path, out / "data", root=root, profile=profile, progress=progress)
    if (data_path / "dataset.json").exists():
        return data_path
    raise DatasetError(
        f"{data_path}: not 'phantom', a manifest (.yaml) or a folder built by `uadlab data build` "
        "(no dataset.json)"
    )


def reproduce(
    profile: str = "smoke",
    data: str | Path = "phantom",
    out: str | Path = "results",
    *,
    experiments: list[str] | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Path]:
    """Run the whole study and write Table 1 and Figs. 4–7 (Bengs et al. 2021, Sec. 3).

    Args:
        profile: ``smoke`` (CI, minutes on 2 CPU cores), ``lab`` or ``paper``.
        data: ``"phantom"`` (default data set), a manifest YAML (then ``root`` is the data folder),
            or a folder built by ``uadlab data build``.
        out: output folder; existing runs and data inside it are reused, never discarded.
        experiments: subset of Table 1 names (default: all 14, in Table 1 order).
        root: data root of a real manifest.
        seed: seed of every training run.
        progress: show tqdm progress bars.

    Returns:
        Paths of the outputs: ``table1.csv``, ``table1.md``, ``figures``, ``runs``.

    Raises:
        ValueError: an unknown experiment name.
        DatasetError: ``data`` is not a data set, or it has no lesion cohort to evaluate.
    """
    prof = get_profile(profile)
    names = list(EXPERIMENTS) if experiments is None else [parse_experiment(e).name for e in experiments]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = _resolve_data(data, out, prof.name, Path(root) if root else None, progress)
    dataset = load_dataset(data_dir)
    if not dataset.lesion_cohorts:
        raise DatasetError(f"{data_dir}: no lesion cohort to evaluate on")

    runs = [(name, 1.0) for name in names]
    runs += [(name, f) for name in DATA_SIZE_EXPERIMENTS if name in names for f in prof.fractions if f != 1.0]

    rows, size_rows, subject_tables = [], [], {}
    for experiment, fraction in runs:
        name = run_name(experiment, fraction)
        config = TrainConfig(experiment=experiment, profile=prof.name, data=str(data_dir),
                             fraction=fraction, seed=seed)
        run_dir = train(config, out / "runs" / name, resume=True, progress=progress).run_dir
        metrics = evaluate_run(run_dir, data_dir, out / "evaluation" / name, overwrite=True,
                               progress=progress)
        for cohort, m in metrics["cohorts"].items():
            if fraction == 1.0:
                rows.append({"experiment": experiment, "dataset": cohort,
                             **{k: m[k] for k in _TABLE1_COLUMNS[2:]}})
            if experiment in DATA_SIZE_EXPERIMENTS:
                size_rows.append({"experiment": experiment, "fraction": fraction, "dataset": cohort,
                                  "auprc": m["auprc"], "dice_d": m["dice_d"]})
        if fraction == 1.0:
            subject_tables[experiment] = pd.read_csv(out / "evaluation" / name / "subjects.csv")

    table = pd.DataFrame(rows, columns=_TABLE1_COLUMNS)
    with atomic_write(out / "table1.csv", overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_write(out / "table1.md", overwrite=True) as tmp:
        tmp.write_text(analysis.table1_markdown(table))

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    _write_figures(figures, dataset, out, names, subject_tables, pd.DataFrame(size_rows))
    with atomic_write(out / "reproduce.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({"profile": prof.name, "data": str(data_dir), "seed": seed,
                                   "experiments": names, "runs": [run_name(*r) for r in runs]}, indent=2))
    return {"table1.csv": out / "table1.csv", "table1.md": out / "table1.md", "figures": figures,
            "runs": out / "runs"}


def _write_figures(figures: Path, dataset, out: Path, names: list[str],
                   subject_tables: dict[str, pd.DataFrame], size_table: pd.DataFrame) -> None:
    """Figs. 4–7 for the baselines and the best run (by mean DICE_D over cohorts) among ``names``."""
    raise NotImplementedError  # filled in once uadlab.analysis and uadlab.viz land
