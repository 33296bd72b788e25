"""Tests of uadlab.evaluation.protocol: the honest protocol (threshold on val only), metrics, oracle, FPR, files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from uadlab.errors import DatasetError, RunError
from uadlab.evaluation import metrics
from uadlab.evaluation import protocol as evaluation
from uadlab.evaluation.inference import make_maps
from uadlab.evaluation.protocol import (
    FPRS,
    SUBJECT_COLUMNS,
    SUMMARY_KEYS,
    EvaluationResult,
    evaluate_maps,
    evaluate_run,
    fit_threshold,
    fpr_thresholds,
    score,
)

SIZE = 16
#: No erosion, no median filter: the anomaly map equals the residual inside the brain, so the
#: right answers are known exactly.
RAW = {"erosion_iterations": 0, "median_size": 1}


def _subject(rng, subject_id, *, cohort="tumour", split="test", lesion=True, lesion_residual=0.6, noise=0.1):
    """An image whose reconstruction misses a 4³ lesion by ``lesion_residual`` and elsewhere by noise < ``noise``."""
    brain = np.zeros((SIZE,) * 3, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    image = (rng.uniform(0.2, 0.3, brain.shape) * brain).astype(np.float32)
    lesion_mask = np.zeros_like(brain)
    if lesion:
        x, y, z = rng.integers(3, SIZE - 7, size=3)
        lesion_mask[x:x + 4, y:y + 4, z:z + 4] = True
    recon = image - rng.uniform(0, noise, brain.shape).astype(np.float32) * brain
    recon[lesion_mask] = image[lesion_mask] - lesion_residual
    return make_maps(subject_id, image, recon, brain, lesion_mask, cohort=cohort, split=split,
                     postprocess_kwargs=RAW)


def _maps(rng, prefix, n, **kwargs):
    return {f"{prefix}{i}": _subject(rng, f"{prefix}{i}", **kwargs) for i in range(n)}


@pytest.fixture
def val(rng):
    return _maps(rng, "val", 3, split="val")


@pytest.fixture
def test(rng):
    return _maps(rng, "test", 4)


@pytest.fixture
def healthy(rng):
    return _maps(rng, "healthy", 2, cohort="healthy", split="val", lesion=False)


# --- fit_threshold / score ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["greedy", "grid"])
def test_threshold_separates_noise_from_lesion_and_scores_perfectly(val, test, method):
    threshold = fit_threshold(val, method=method)
    assert 0.1 <= threshold < 0.6
    result = score(test, threshold, n_resamples=50)
    assert result.dice_d == pytest.approx(1.0)
    assert result.dice_s_mean == pytest.approx(1.0) and result.dice_s_std == pytest.approx(0.0)
    assert result.auprc == pytest.approx(1.0) and result.slice_auprc == pytest.approx(1.0)
    assert result.sensitivity == 1.0 and result.specificity == 1.0
    assert result.n_subjects == 4 and result.threshold == threshold


def test_score_matches_metrics_at_a_given_threshold(test):
    result = score(test, 0.05, n_resamples=50)   # inside the noise: many false positives
    preds = [m.anomaly_map > 0.05 for m in test.values()]
    labels = [m.lesion_mask for m in test.values()]
    assert result.dice_d == pytest.approx(metrics.dice_dataset(preds, labels))
    expected = metrics.dice_subjects(preds, labels)
    np.testing.assert_allclose(result.subjects["dice"], expected)
    assert result.dice_s_mean == pytest.approx(expected.mean())
    assert result.dice_s_std == pytest.approx(expected.std())
    assert result.dice_d < 0.5
    assert list(result.subjects.columns) == list(SUBJECT_COLUMNS)
    assert result.subjects["lesion_voxels"].tolist() == [64] * 4
    assert result.subjects["cohort"].tolist() == ["tumour"] * 4


def _known(subject_id, lesion, predicted):
    """A subject whose anomaly map is 0.6 on ``predicted`` voxels and 0 elsewhere (threshold 0.3)."""
    brain = np.zeros((SIZE,) * 3, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    image = np.where(brain, 0.8, 0.0).astype(np.float32)
    return make_maps(subject_id, image, image - 0.6 * predicted, brain, lesion, postprocess_kwargs=RAW)


def test_dice_d_is_pooled_and_dice_s_per_subject_known_answer():
    """A big lesion found perfectly and a 1-voxel lesion found with one false positive."""
    big = np.zeros((SIZE,) * 3, bool)
    big[4:8, 4:8, 4:8] = True                      # 64 voxels
    small = np.zeros_like(big)
    small[10, 10, 10] = True
    small_pred = small.copy()
    small_pred[10, 10, 11] = True                  # 2 predicted, 1 right
    maps = [_known("big", big, big), _known("small", small, small_pred)]
    result = score(maps, 0.3, n_resamples=200, seed=5, confidence=0.5)
    assert result.dice_d == pytest.approx(2 * 65 / (66 + 65))        # pooled: 0.992
    assert result.dice_s_mean == pytest.approx(5 / 6)                # mean of (1, 2/3)
    assert result.dice_s_std == pytest.approx(1 / 6)                 # population sd
    np.testing.assert_allclose(result.subjects["dice"], [1.0, 2 / 3])
    # each interval resamples its own statistic (a 50 % interval tells the two apart)
    preds, labels = [big, small_pred], [big, small]
    assert result.dice_d_ci == metrics.bootstrap_ci(metrics.pooled_dice_statistic(preds, labels), n_subjects=2,
                                                    n_resamples=200, seed=5, confidence=0.5)
    assert result.dice_s_ci == metrics.bootstrap_ci(np.array([1.0, 2 / 3]), n_resamples=200, seed=5,
                                                    confidence=0.5)
    assert result.dice_d_ci != result.dice_s_ci


def test_auprc_counts_brain_voxels_only(test):
    """A lesion voxel outside the brain (score 0) is ignored, as in sklearn on brain voxels."""
    maps = list(test.values())
    spill = maps[0].lesion_mask.copy()
    spill[0, 0, 0] = True                          # outside the brain mask
    maps[0] = dataclasses.replace(maps[0], lesion_mask=spill)
    result = score(maps, 0.3, n_resamples=20)
    brain_s = np.concatenate([m.anomaly_map[m.brain_mask] for m in maps])
    brain_y = np.concatenate([m.lesion_mask[m.brain_mask] for m in maps])
    assert result.auprc == pytest.approx(average_precision_score(brain_y, brain_s), abs=1e-9)
    whole = average_precision_score(np.concatenate([m.lesion_mask.ravel() for m in maps]),
                                    np.concatenate([m.anomaly_map.ravel() for m in maps]))
    assert result.auprc - whole > 1e-3


def test_fit_threshold_passes_its_options(val):
    scores = [m.anomaly_map for m in val.values()]
    labels = [m.lesion_mask for m in val.values()]
    assert fit_threshold(val, iterations=3, lo=0.1, hi=0.5) == \
        metrics.greedy_threshold_search(scores, labels, 3, 0.1, 0.5)
    assert fit_threshold(val, method="grid") == metrics.grid_threshold_search(scores, labels)
    assert fit_threshold(val, method="grid", thresholds=[0.05, 0.2]) == 0.2  # 0.05 lies inside the noise
    with pytest.raises(ValueError, match="`thresholds` must be None with method='greedy'"):
        fit_threshold(val, thresholds=[0.2])


def test_fit_threshold_searches_the_range_of_a_score_beyond_one(val):
    scaled = {k: dataclasses.replace(m, anomaly_map=20 * m.anomaly_map) for k, m in val.items()}
    top = max(float(m.anomaly_map.max()) for m in scaled.values())
    assert top > 1
    scores = [m.anomaly_map for m in scaled.values()]
    labels = [m.lesion_mask for m in scaled.values()]
    assert fit_threshold(scaled) == metrics.greedy_threshold_search(scores, labels, 10, 0.0, top)
    assert fit_threshold(val) == metrics.greedy_threshold_search(  # a residual in [0, 1]: the paper's interval
        [m.anomaly_map for m in val.values()], labels, 10, 0.0, 1.0)
    assert fit_threshold(scaled) > 1  # the lesions' scores lie above the paper's interval, and it is found there


def test_confidence_intervals_are_seeded_and_bracket_the_estimate(test):
    a = score(test, 0.05, n_resamples=200, seed=3)
    b = score(test, 0.05, n_resamples=200, seed=3)
    assert a.dice_d_ci == b.dice_d_ci and a.dice_s_ci == b.dice_s_ci and a.auprc_ci == b.auprc_ci
    assert a.dice_s_ci[0] <= a.dice_s_mean <= a.dice_s_ci[1]
    assert a.dice_d_ci[0] <= a.dice_d <= a.dice_d_ci[1]
    assert a.auprc_ci[0] <= a.auprc <= a.auprc_ci[1] + 1e-3


def test_threshold_depends_on_validation_only(val, test, rng):
    """Changing or shuffling the TEST lesion masks must not move the threshold."""
    first = evaluate_maps(val, test, n_resamples=20)
    scrambled = {k: make_maps(k, m.image, m.recon, m.brain_mask, rng.permutation(m.lesion_mask.ravel())
                              .reshape(m.lesion_mask.shape), postprocess_kwargs=RAW)
                 for k, m in test.items()}
    second = evaluate_maps(val, scrambled, n_resamples=20)
    assert second.threshold == first.threshold
    assert second.dice_d < first.dice_d  # the scores did see the new labels
    harder_val = {k: make_maps(k, m.image, m.image - 0.2 * m.lesion_mask, m.brain_mask, m.lesion_mask,
                               postprocess_kwargs=RAW) for k, m in val.items()}
    assert evaluate_maps(harder_val, test, n_resamples=20).threshold < 0.2 <= first.threshold


def test_oracle_is_at_least_the_validated_dice(val, test):
    noisy_val = {k: make_maps(k, m.image, m.image - 0.05 * m.lesion_mask, m.brain_mask, m.lesion_mask,
                              postprocess_kwargs=RAW) for k, m in val.items()}
    result = evaluate_maps(noisy_val, test, n_resamples=20)
    assert result.dice_d < 1.0  # the validation threshold falls inside the test noise
    assert result.oracle_dice_d == pytest.approx(1.0)
    assert result.oracle_dice_d >= result.dice_d
    preds = [m.anomaly_map > result.oracle_threshold for m in test.values()]
    assert metrics.dice_dataset(preds, [m.lesion_mask for m in test.values()]) == pytest.approx(1.0)


def test_fpr_thresholds_are_ordered_and_hold_their_rate(healthy):
    thresholds = fpr_thresholds(healthy)
    assert list(thresholds) == list(FPRS)
    values = list(thresholds.values())
    assert values[0] >= values[1] >= values[2] > 0
    brain = np.concatenate([m.anomaly_map[m.brain_mask] for m in healthy.values()])
    for fpr, t in thresholds.items():
        assert (brain > t).mean() <= fpr
        assert (brain >= t).mean() >= fpr  # the quantile, not an arbitrary lower bound


def test_evaluate_maps_reports_unsupervised_dice_per_fpr(val, test, healthy):
    result = evaluate_maps(val, test, healthy, n_resamples=20, threshold_source="unit")
    assert set(result.fpr_dice_d) == set(FPRS)
    labels = [m.lesion_mask for m in test.values()]
    for fpr, t in result.fpr_thresholds.items():
        preds = [m.anomaly_map > t for m in test.values()]
        assert result.fpr_dice_d[fpr] == pytest.approx(metrics.dice_dataset(preds, labels))
    assert result.threshold_source == "unit" and result.n_val_subjects == 3


def test_evaluate_maps_without_healthy_maps_skips_fpr(val, test):
    result = evaluate_maps(val, test, n_resamples=20)
    assert result.fpr_thresholds == {} and result.fpr_dice_d == {}


def test_to_dict_is_json_ready_and_names_the_oracle(val, test, healthy):
    out = evaluate_maps(val, test, healthy, n_resamples=20).to_dict()
    assert set(SUMMARY_KEYS) <= set(out)
    assert {"oracle_dice_d", "oracle_threshold", "dice_s_ci", "auprc_ci", "dice_d_ci", "fpr_thresholds",
            "fpr_dice_d", "sensitivity", "specificity", "threshold_source"} <= set(out)
    assert set(out["fpr_thresholds"]) == {"0.01", "0.05", "0.1"}
    json.dumps(out, allow_nan=False)


def test_undefined_metrics_become_null(rng):
    result = EvaluationResult(0.5, 1, float("nan"), (float("nan"),) * 2, 0.0, 0.0, (0.0, 0.0), 0.5,
                              (0.4, 0.6), 0.5, 0.5, 0.5, fpr_dice_d={0.05: np.float64("nan")})
    out = result.to_dict()
    assert out["dice_d"] is None and out["dice_d_ci"] == [None, None] and out["fpr_dice_d"] == {"0.05": None}


# --- validation ---------------------------------------------------------------------------------------

def test_validation_and_test_must_not_overlap(val, test):
    with pytest.raises(ValueError, match="`val_maps` must not contain test subjects.*test0"):
        evaluate_maps({**val, "test0": test["test0"]}, test)


def test_healthy_maps_must_not_overlap_test(val, test):
    with pytest.raises(ValueError, match="`healthy_val_maps` must not contain test subjects"):
        evaluate_maps(val, test, {"test0": test["test0"]})


def test_bad_arguments(val, test, rng):
    unlabelled = _subject(rng, "u")
    unlabelled = make_maps("u", unlabelled.image, unlabelled.recon, unlabelled.brain_mask)
    with pytest.raises(ValueError, match="`method` must be 'greedy' or 'grid'"):
        fit_threshold(val, method="bisect")
    with pytest.raises(ValueError, match="`val_maps` must hold at least one subject"):
        fit_threshold({})
    with pytest.raises(ValueError, match="`val_maps` must be labelled.*'u'"):
        fit_threshold([unlabelled])
    with pytest.raises(TypeError, match="`val_maps` must hold SubjectMaps, got ndarray"):
        fit_threshold([np.zeros(3)])
    with pytest.raises(TypeError, match="`maps` must be a dict or list of SubjectMaps, got str"):
        score("maps", 0.5)
    with pytest.raises(ValueError, match="`threshold` must be a finite number, got nan"):
        score(test, float("nan"))
    with pytest.raises(TypeError, match="`threshold` must be a finite number, got True"):
        score(test, True)
    healthy_only = {k: make_maps(k, m.image, m.recon, m.brain_mask, np.zeros_like(m.lesion_mask))
                    for k, m in val.items()}
    with pytest.raises(ValueError, match="at least one lesion voxel"):
        fit_threshold(healthy_only)
    with pytest.raises(ValueError, match="`fpr` must be a number in"):
        fpr_thresholds(val, fprs=(1.5,))


# --- evaluate_run with fake run and data sets -----------------------------------------------------------

class _FakeDataset:
    """Stands in for uadlab.data.dataset.BuiltDataset: ``ids``, ``subject``, ``stack``, ``cohorts``,
    ``lesion_cohorts``."""

    def __init__(self, subjects):
        self._subjects = {s.subject_id: s for s in subjects}

    def ids(self, *, cohort=None, split=None):
        if cohort is not None and cohort not in self.cohorts:  # as BuiltDataset.ids
            raise ValueError(f"`cohort` must be one of {self.cohorts}, got {cohort!r}")
        return [i for i, s in self._subjects.items()
                if (cohort is None or s.cohort == cohort) and (split is None or s.split == split)]

    def subject(self, subject_id):
        if subject_id not in self._subjects:
            raise DatasetError(f"unknown subject {subject_id!r}")
        return self._subjects[subject_id]

    def stack(self, ids):
        return (np.stack([self._subjects[i].image for i in ids]),
                np.stack([self._subjects[i].brain_mask for i in ids]))

    @property
    def cohorts(self):
        return list(dict.fromkeys(s.cohort for s in self._subjects.values()))

    @property
    def lesion_cohorts(self):
        return sorted({s.cohort for s in self._subjects.values() if s.cohort != "healthy"},
                      key=["tumour", "stroke", "brats2014", "mslub"].index)


def _fake_subject(rng, subject_id, cohort, split, lesion=True):
    """Healthy tissue in [0.2, 0.3], lesion voxels at 1.0 (a "healing" model clips them to 0.3)."""
    m = _subject(rng, subject_id, cohort=cohort, split=split, lesion=lesion)
    image = np.where(m.lesion_mask, 1.0, m.image).astype(np.float32)
    return SimpleNamespace(subject_id=subject_id, cohort=cohort, split=split, image=image,
                           brain_mask=m.brain_mask, lesion_mask=m.lesion_mask, affine=np.eye(4))


def _fake_data(rng, spec):
    """``spec``: ``{(cohort, split): n}``."""
    return _FakeDataset([_fake_subject(rng, f"{cohort}-{split}-{i}", cohort, split, lesion=cohort != "healthy")
                         for (cohort, split), n in spec.items() for i in range(n)])


@pytest.fixture
def fake_run(monkeypatch, rng):
    """Patch load_run/load_dataset/reconstruct; returns the dict of data sets by folder name."""
    datasets = {
        "phantom": _fake_data(rng, {("healthy", "val"): 2, ("tumour", "val"): 2, ("tumour", "test"): 3,
                                    ("stroke", "val"): 2, ("stroke", "test"): 2}),
        "real": _fake_data(rng, {("brats2014", "test"): 2, ("mslub", "test"): 2}),
        "val_tumour": _fake_data(rng, {("tumour", "val"): 2}),
        "val_brats": _fake_data(rng, {("brats2014", "val"): 2, ("tumour", "val"): 1}),
        "empty": _fake_data(rng, {("healthy", "val"): 1}),
        "brats_only": _fake_data(rng, {("brats2014", "val"): 2, ("brats2014", "test"): 3}),
    }
    monkeypatch.setattr(evaluation, "load_run", lambda run_dir, device=None: (
        "model", SimpleNamespace(experiment="3D-Cube-n", data="deleted")))

    def load(path):
        if Path(path).name not in datasets:
            raise DatasetError(f"{path}: no data-set folder here; build one with `uadlab data build`")
        return datasets[Path(path).name]

    monkeypatch.setattr(evaluation, "load_dataset", load)
    monkeypatch.setattr(evaluation, "run_status",
                        lambda run_dir: {"epochs": 3, "best_epoch": 2, "max_epochs": 3, "finished": True})
    monkeypatch.setattr("uadlab.evaluation.inference.reconstruct_and_score", lambda model, volume, batch_size, device: (
        np.minimum(volume, 0.3), volume - np.minimum(volume, 0.3)))  # the residual: the default score
    return datasets


def test_evaluate_run_writes_honest_metrics_per_cohort(fake_run, tmp_path):
    out = tmp_path / "eval"
    result = evaluate_run("run", "phantom", out, postprocess_kwargs=RAW, n_resamples=20)
    written = json.loads((out / "metrics.json").read_text())
    assert written == result
    assert set(SUMMARY_KEYS) <= set(written)
    assert written["cohort"] == "tumour" and written["experiment"] == "3D-Cube-n"
    assert list(written["cohorts"]) == ["tumour", "stroke"]
    for cohort, m in written["cohorts"].items():
        assert m["threshold_source"] == f"val split of {cohort} in phantom"
        assert m["dice_d"] == pytest.approx(1.0) and m["oracle_dice_d"] >= m["dice_d"]
        assert list(m["fpr_thresholds"]) == ["0.01", "0.05", "0.1"]
    assert written["dice_d"] == written["cohorts"]["tumour"]["dice_d"]
    assert written["n_subjects"] == 3 and written["cohorts"]["stroke"]["n_subjects"] == 2
    subjects = pd.read_csv(out / "subjects.csv")
    assert list(subjects.columns) == list(SUBJECT_COLUMNS)
    assert subjects["subject_id"].tolist() == ["tumour-test-0", "tumour-test-1", "tumour-test-2",
                                               "stroke-test-0", "stroke-test-1"]


def test_evaluate_run_refuses_to_overwrite(fake_run, tmp_path):
    evaluate_run("run", "phantom", tmp_path, postprocess_kwargs=RAW, n_resamples=10)
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(RunError, match="metrics.json: already exists"):
        evaluate_run("run", "phantom", tmp_path, postprocess_kwargs=RAW, n_resamples=10)
    assert (tmp_path / "metrics.json").read_text() == before
    evaluate_run("run", "phantom", tmp_path, postprocess_kwargs=RAW, n_resamples=10, overwrite=True)
    (tmp_path / "metrics.json").unlink()  # a per-subject table alone is protected too
    before = (tmp_path / "subjects.csv").read_text()
    with pytest.raises(RunError, match="subjects.csv: already exists"):
        evaluate_run("run", "phantom", tmp_path, postprocess_kwargs=RAW, n_resamples=10)
    assert (tmp_path / "subjects.csv").read_text() == before and not (tmp_path / "metrics.json").exists()


def test_evaluate_run_takes_thresholds_from_val_data(fake_run, tmp_path):
    same = evaluate_run("run", "real", tmp_path / "a", val_data="val_brats", postprocess_kwargs=RAW, n_resamples=10)
    assert same["cohorts"]["brats2014"]["threshold_source"] == "val split of brats2014 in val_brats"
    assert same["cohorts"]["mslub"]["threshold_source"] == "val splits of tumour, brats2014 in val_brats (pooled)"
    assert same["cohorts"]["mslub"]["n_val_subjects"] == 3
    assert same["cohorts"]["mslub"]["fpr_thresholds"] == {}  # no healthy val anywhere
    pooled = evaluate_run("run", "real", tmp_path / "b", val_data="phantom", postprocess_kwargs=RAW, n_resamples=10)
    assert pooled["cohorts"]["brats2014"]["n_val_subjects"] == 4
    assert list(pooled["cohorts"]["brats2014"]["fpr_thresholds"]) == ["0.01", "0.05", "0.1"]


def test_evaluate_run_on_lesion_cohorts_only_takes_healthy_maps_from_the_training_data(fake_run, monkeypatch,
                                                                                      tmp_path):
    """A data set without a healthy cohort (e.g. BraTS split val/test): FPR thresholds from the run's data."""
    monkeypatch.setattr(evaluation, "load_run", lambda run_dir, device=None: (
        "model", SimpleNamespace(experiment="3D-None", data="/runs/data/phantom")))
    result = evaluate_run("run", "brats_only", tmp_path / "a", postprocess_kwargs=RAW, n_resamples=10)
    m = result["cohorts"]["brats2014"]
    assert m["threshold_source"] == "val split of brats2014 in brats_only" and m["n_subjects"] == 3
    assert m["dice_d"] == pytest.approx(1.0)
    assert list(m["fpr_thresholds"]) == ["0.01", "0.05", "0.1"]
    assert result["healthy_val_data"] == "/runs/data/phantom"
    assert result["healthy_val_note"] == "healthy val split of the run's training data /runs/data/phantom"
    # the same FPR thresholds as evaluating with the training data passed as --val-data
    direct = evaluate_run("run", "brats_only", tmp_path / "b", val_data="phantom", postprocess_kwargs=RAW,
                          n_resamples=10)
    assert direct["cohorts"]["brats2014"]["fpr_thresholds"] == m["fpr_thresholds"]
    assert direct["healthy_val_note"] == "healthy val split of phantom"


def test_evaluate_run_on_lesion_cohorts_only_skips_fpr_when_the_training_data_is_gone(fake_run, tmp_path):
    result = evaluate_run("run", "brats_only", tmp_path, postprocess_kwargs=RAW, n_resamples=10)
    assert result["cohorts"]["brats2014"]["fpr_thresholds"] == {}
    assert result["cohorts"]["brats2014"]["dice_d"] == pytest.approx(1.0)
    assert result["healthy_val_data"] is None
    assert result["healthy_val_note"].startswith("FPR thresholds skipped")
    assert "deleted: no data-set folder here" in result["healthy_val_note"]


def test_evaluate_run_val_data_may_reuse_test_ids(fake_run, rng, tmp_path):
    """Two builds may share subject ids: the other build's val case is not this build's test case."""
    fake_run["twin"] = _FakeDataset([_fake_subject(rng, "brats2014-test-0", "brats2014", "val")])
    result = evaluate_run("run", "real", tmp_path, val_data="twin", postprocess_kwargs=RAW, n_resamples=10)
    assert result["cohorts"]["brats2014"]["threshold_source"] == "val split of brats2014 in twin"
    assert result["cohorts"]["brats2014"]["n_val_subjects"] == 1


def test_evaluate_run_without_validation_labels_fails_clearly(fake_run, tmp_path):
    with pytest.raises(DatasetError, match="no labelled validation subjects.*'brats2014'.*--val-data"):
        evaluate_run("run", "real", tmp_path, postprocess_kwargs=RAW, n_resamples=10)
    with pytest.raises(DatasetError, match="'brats2014'.* in real nor in empty"):
        evaluate_run("run", "real", tmp_path, val_data="empty", postprocess_kwargs=RAW, n_resamples=10)
    with pytest.raises(DatasetError, match="no lesion cohort has test subjects"):
        evaluate_run("run", "val_tumour", tmp_path, postprocess_kwargs=RAW, n_resamples=10)
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_run_rejects_volumes_the_model_cannot_read(fake_run, monkeypatch, tmp_path):
    monkeypatch.setattr(evaluation, "load_run", lambda run_dir, device=None: (
        SimpleNamespace(image_size=32), SimpleNamespace(experiment="3D-None")))
    with pytest.raises(DatasetError, match="phantom: volumes are \\(16, 16, 16\\), but the run run was trained on 32"):
        evaluate_run("run", "phantom", tmp_path, postprocess_kwargs=RAW, n_resamples=10)


@pytest.mark.slow  # 2-5 s: trains a tiny VAE for one epoch
def test_evaluate_run_end_to_end_with_a_trained_run(monkeypatch, rng, tmp_path):
    """A real 3D VAE trained for one epoch, loaded back, reconstructed, post-processed and scored."""
    from uadlab.profiles import get_profile
    from uadlab.training import reconstruction as training

    data = _fake_data(rng, {("healthy", "train"): 4, ("healthy", "val"): 2, ("tumour", "val"): 2,
                            ("tumour", "test"): 2})
    monkeypatch.setattr(training, "load_dataset", lambda path: data)
    monkeypatch.setattr(evaluation, "load_dataset", lambda path: data)
    tiny = dataclasses.replace(get_profile("smoke"), name="tiny", image_size=SIZE, channels=(4, 8), latent_2d=8,
                               latent_3d=8, batch_size=4, max_epochs=1, patience=1)
    config = training.TrainConfig(experiment="3D-None", profile=tiny, data="fake", device="cpu")
    run_dir = training.train(config, tmp_path / "run").run_dir
    result = evaluate_run(run_dir, "fake", tmp_path / "eval", device="cpu", n_resamples=20)
    assert result["experiment"] == "3D-None" and result["n_subjects"] == 2
    assert 0.0 <= result["threshold"] <= 1.0
    assert result["cohorts"]["tumour"]["oracle_dice_d"] >= (result["dice_d"] or 0.0)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result
    assert len(pd.read_csv(tmp_path / "eval" / "subjects.csv")) == 2
