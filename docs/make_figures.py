"""Regenerate the README's pictures from a finished ``uadlab reproduce`` folder.

    python docs/make_figures.py results/ [--run 3D-Cube-n] [--out docs/]

Writes ``phantom.png`` (the MNI152 template beside three simulated healthy subjects and three
lesion cases, one tumour and two strokes) and ``widget_{threshold,erasing,slices}.png`` (the static
fallback of each ipywidgets explorer, exactly what a headless notebook run shows), all for the
data set and the run inside the results folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nilearn.datasets import load_mni152_template

from uadlab import viz
from uadlab.data.dataset import load_dataset
from uadlab.evaluation.inference import predict
from uadlab.training import load_run
from uadlab.viz import widgets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="output folder of `uadlab reproduce`")
    parser.add_argument("--run", default="3D-Cube-n", help="run (in RESULTS/runs) shown by the widgets")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()

    dataset = load_dataset(args.results / "data")
    healthy = [dataset.subject(i) for i in dataset.ids(cohort="healthy", split="train")[:3]]
    lesion = [dataset.subject(i) for i in dataset.ids(cohort="tumour", split="test")[:1]
              + dataset.ids(cohort="stroke", split="test")[:2]]
    template = load_mni152_template(resolution=1).get_fdata()
    fig = viz.cohort_montage(template, [s.image for s in healthy], [(s.image, s.lesion_mask) for s in lesion],
                             healthy_titles=[s.subject_id for s in healthy],
                             lesion_titles=[f"{s.subject_id} ({s.lesion_mask.sum()} vox)" for s in lesion])
    viz.save_figure(fig, args.out / "phantom.png")

    model, _ = load_run(args.results / "runs" / args.run)
    val = list(predict(model, dataset, dataset.ids(cohort="tumour", split="val")).values())
    case = lesion[0]
    maps = predict(model, dataset, [case.subject_id])[case.subject_id]
    viz.save_figure(widgets.render_static("threshold", val), args.out / "widget_threshold.png")
    viz.save_figure(widgets.render_static("erasing", case.image, case.brain_mask, experiment=args.run.split("@")[0]),
                    args.out / "widget_erasing.png")
    viz.save_figure(widgets.render_static("slices", maps.image, maps.recon, maps.residual, maps.lesion_mask,
                                          anomaly_map=maps.anomaly_map), args.out / "widget_slices.png")


if __name__ == "__main__":
    main()
