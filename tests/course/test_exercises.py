"""The exercise checks: a right answer passes, each common mistake gets its own hint, an unfinished one says so.

Every check is run on the solution the instructor version holds and on the mistakes students make,
so a check that passed everything (or failed everything) would fail here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

from uadlab.course import exercises as ex
from uadlab.course.exercises import ExerciseFeedback, Passed
from uadlab.evaluation.inference import SubjectMaps
from uadlab.evaluation.metrics import dice_dataset


def _todo(*args):
    raise NotImplementedError()


def _hint(check, *args, **kwargs) -> str:
    with pytest.raises(ExerciseFeedback) as error:
        check(*args, **kwargs)
    return str(error.value)


def test_feedback_shows_as_one_line_in_ipython(capsys):
    shell = InteractiveShell.instance()
    shell.run_cell("from uadlab.course.exercises import check_dice\ncheck_dice(lambda p, t: 0.5)")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("✗ ") and "Jaccard" in lines[0]
    assert issubclass(ExerciseFeedback, AssertionError)  # nbgrader counts the graded cell as failed


def test_passed_reads_as_a_check_mark():
    assert repr(Passed("dice", "fine")) == "✓ dice: fine"


# --- lab 00 -----------------------------------------------------------------------------------------

def _dice(pred, target):
    size = np.count_nonzero(pred) + np.count_nonzero(target)
    return float("nan") if size == 0 else 2 * np.count_nonzero(pred & target) / size


def test_check_dice():
    assert isinstance(ex.check_dice(_dice), Passed)
    assert "not done yet" in _hint(ex.check_dice, _todo)
    assert "Jaccard" in _hint(ex.check_dice, lambda p, t: np.count_nonzero(p & t) / np.count_nonzero(p | t))
    assert "factor 2" in _hint(ex.check_dice, lambda p, t: _dice(p, t) / 2)
    assert "empty masks" in _hint(ex.check_dice, lambda p, t: 2 * np.count_nonzero(p & t) / max(1, p.sum() + t.sum()))
    assert "empty masks" in _hint(ex.check_dice, lambda p, t: 2 * int((p & t).sum()) / int(p.sum() + t.sum()))
    assert "one number" in _hint(ex.check_dice, lambda p, t: p & t)


def test_check_dice_d():
    assert "DICE_D" in repr(ex.check_dice_d(dice_dataset))
    mean_dice_s = lambda ps, ts: float(np.nanmean([_dice(p, t) for p, t in zip(ps, ts)]))  # noqa: E731
    assert "DICE_S" in _hint(ex.check_dice_d, mean_dice_s)
    assert "expected DICE_D" in _hint(ex.check_dice_d, lambda ps, ts: _dice(ps[0], ts[0]))


# --- lab 01 -----------------------------------------------------------------------------------------

def _kl(mu, logvar):
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)


def test_check_kl():
    assert isinstance(ex.check_kl(_kl), Passed)
    assert "sign" in _hint(ex.check_kl, lambda m, v: -_kl(m, v))
    assert "0.5" in _hint(ex.check_kl, lambda m, v: 2 * _kl(m, v))
    assert "averaged over the latent" in _hint(ex.check_kl, lambda m, v: _kl(m, v) / m.shape[1])
    assert "over the batch" in _hint(ex.check_kl, lambda m, v: _kl(m, v).sum())
    assert "variance is exp(logvar)" in _hint(ex.check_kl, lambda m, v: 0.5 * (m ** 2 + v - 1 - v.abs().log()).sum(1))


def test_check_reparameterize():
    assert isinstance(ex.check_reparameterize(lambda m, v, e: m + torch.exp(0.5 * v) * e), Passed)
    assert "variance" in _hint(ex.check_reparameterize, lambda m, v, e: m + torch.exp(v) * e)
    assert "mean is missing" in _hint(ex.check_reparameterize, lambda m, v, e: torch.exp(0.5 * v) * e)
    assert "gradients" in _hint(ex.check_reparameterize,
                                lambda m, v, e: (m + torch.exp(0.5 * v) * e).detach())
    assert "gradients" in _hint(ex.check_reparameterize, lambda m, v, e: m + torch.exp(0.5 * v.detach()) * e)


# --- lab 02 -----------------------------------------------------------------------------------------

def _search(scores, labels, candidates):
    values = [dice_dataset([s > t for s in scores], labels) for t in candidates]
    return float(candidates[int(np.argmax(values))])


def test_check_threshold_search():
    assert isinstance(ex.check_threshold_search(_search), Passed)
    best_dice = lambda s, lab, c: max(dice_dataset([x > t for x in s], lab) for t in c)  # noqa: E731
    assert "best DICE_D" in _hint(ex.check_threshold_search, best_dice)
    dice_s = lambda s, lab, c: float(c[int(np.argmax([np.nanmean([_dice(x > t, y) for x, y in zip(s, lab)])  # noqa: E731
                                                          for t in c]))])
    assert "DICE_S" in _hint(ex.check_threshold_search, dice_s)
    assert "one of the candidates" in _hint(ex.check_threshold_search, lambda s, lab, c: 0.123456)


def _maps(seed, n=4):
    rng = np.random.default_rng(seed)
    maps = {}
    for i in range(n):
        lesion = np.zeros((8, 8, 6), bool)
        lesion[2:5, 2:6, 1:4] = True
        score = np.clip(rng.normal(0.2, 0.1, lesion.shape) + 0.3 * lesion, 0, 1).astype(np.float32)
        brain = np.ones_like(lesion)
        maps[f"s{seed}_{i}"] = SubjectMaps(f"s{seed}_{i}", score, score, score, score, brain, lesion, np.eye(4))
    return maps


def test_check_optimism():
    from uadlab.evaluation.protocol import fit_threshold

    val, test = _maps(1), _maps(2)
    at = lambda t: dice_dataset([m.anomaly_map > t for m in test.values()],  # noqa: E731
                                [m.lesion_mask for m in test.values()])
    honest, optimistic = at(fit_threshold(val)), at(fit_threshold(test))
    assert optimistic >= honest
    assert "points" in repr(ex.check_optimism(honest, optimistic, val, test))
    if optimistic != honest:
        assert "swapped" in _hint(ex.check_optimism, optimistic, honest, val, test)
    assert "`honest`" in _hint(ex.check_optimism, honest + 0.1, optimistic, val, test)
    assert "not done yet" in _hint(ex.check_optimism, None, None, val, test)


# --- lab 03 -----------------------------------------------------------------------------------------

def _mean_fill(image, erased, rng):
    out = image.copy()
    out[erased] = image.mean()
    return out


def test_check_fill():
    assert isinstance(ex.check_fill(_mean_fill), Passed)

    def in_place(image, erased, rng):
        image[erased] = 0
        return image

    assert "never touch" in _hint(ex.check_fill, in_place)
    assert "outside the erased box" in _hint(ex.check_fill, lambda im, er, rng: np.zeros_like(im))
    assert "nothing was erased" in _hint(ex.check_fill, lambda im, er, rng: im.copy())

    def global_noise(image, erased, rng):
        out = image.copy()
        out[erased] = np.random.random(int(erased.sum()))
        return out

    assert "np.random" in _hint(ex.check_fill, global_noise)


@pytest.mark.parametrize(("low", "high", "right"), [(0.01, 0.05, "better"), (-0.05, -0.01, "worse"),
                                                    (-0.01, 0.03, "no difference")])
def test_check_verdict(low, high, right):
    paired = pd.DataFrame([{"experiment": "2D-Patch-n", "baseline": "2D-None", "cohort": "tumour", "difference": 0.5,
                            "ci_low": 0.4, "ci_high": 0.6},
                           {"experiment": "3D-Cube-n", "baseline": "3D-None", "cohort": "tumour",
                            "difference": (low + high) / 2, "ci_low": low, "ci_high": high}])
    assert "3D-Cube-n" in repr(ex.check_verdict(right, paired))  # the last row is judged
    for wrong in {"better", "worse", "no difference"} - {right}:
        assert "interval" in _hint(ex.check_verdict, wrong, paired)
    assert "not done yet" in _hint(ex.check_verdict, None, paired)
    assert "must be one of" in _hint(ex.check_verdict, "yes", paired)


# --- labs 04 and 05 ---------------------------------------------------------------------------------

def test_check_prediction_passes_any_prediction_and_says_what_the_data_show():
    x = np.arange(10.0)
    assert "too few" in repr(ex.check_prediction("rises", [0.5, 1.0], [0.2, 0.3], what="y"))  # two sizes: no trend
    assert "as you predicted" in repr(ex.check_prediction("rises", x, x, what="y"))
    assert "rises" in repr(ex.check_prediction("falls", x, x, what="y")) and "you predicted 'falls'" in repr(
        ex.check_prediction("falls", x, x, what="y"))
    assert "falls (Spearman" in repr(ex.check_prediction("flat", x, -x, what="y"))
    assert "not done yet" in _hint(ex.check_prediction, ..., x, x, what="y")


def test_check_lesion_volume():
    assert isinstance(ex.check_lesion_volume(lambda m, s: m.sum() * np.prod(s) / 1000), Passed)
    assert "mm³" in _hint(ex.check_lesion_volume, lambda m, s: m.sum() * np.prod(s))
    assert "voxel's volume" in _hint(ex.check_lesion_volume, lambda m, s: m.sum() / 1000)


def test_check_slice_labels():
    assert isinstance(ex.check_slice_labels(lambda m: m.any(axis=(0, 1))), Passed)
    assert "ANY" in _hint(ex.check_slice_labels, lambda m: m.all(axis=(0, 1)))
    assert "last axis" in _hint(ex.check_slice_labels, lambda m: m.any(axis=(1, 2)))


# --- lab 06 -----------------------------------------------------------------------------------------

def test_check_bottleneck():
    from uadlab.models.dense_vae import DenseVAE
    from uadlab.models.spatial_vae import SpatialVAE

    dense = DenseVAE(2, image_size=16, channels=(4, 8), latent_dim=6)
    spatial = SpatialVAE(2, image_size=16, channels=(4, 8), latent_channels=3)
    models = {"dense": dense, "spatial": spatial}
    n_spatial = spatial(torch.zeros(1, 1, 16, 16)).mu[0].numel()
    assert "dense 6" in repr(ex.check_bottleneck({"dense": 6, "spatial": n_spatial}, models, 16))
    assert "shape" in _hint(ex.check_bottleneck, {"dense": 6, "spatial": 3}, models, 16)
    assert "not done yet" in _hint(ex.check_bottleneck, {}, models, 16)


# --- lab 07 -----------------------------------------------------------------------------------------

def _brain():
    image = np.full((12, 12, 8), 0.5, np.float32)
    brain = np.zeros(image.shape, bool)
    brain[2:10, 2:10, 1:7] = True
    return image, brain


def _blob(image, brain, rng):
    centre = rng.integers(4, 8, size=2)
    mask = np.zeros(image.shape, bool)
    mask[centre[0] - 2:centre[0] + 2, centre[1] - 2:centre[1] + 2, 2:5] = True
    out = image.copy()
    out[mask] = 1.0
    return out, mask & brain


def test_check_anomaly():
    image, brain = _brain()
    assert isinstance(ex.check_anomaly(_blob, image, brain), Passed)
    assert "empty" in _hint(ex.check_anomaly, lambda im, b, rng: (im.copy(), np.zeros(im.shape, bool)), image, brain)
    assert "outside the brain" in _hint(ex.check_anomaly, lambda im, b, rng: (im.copy(), ~b), image, brain)

    def one_voxel(image, brain, rng):
        out, mask = image.copy(), np.zeros(image.shape, bool)
        mask[tuple(np.argwhere(brain)[rng.integers(brain.sum())])] = True
        out[mask] = 1.0
        return out, mask

    assert "at least 20 voxels" in _hint(ex.check_anomaly, one_voxel, image, brain)

    def in_place(image, brain, rng):
        out, mask = _blob(image, brain, rng)
        image[mask] = 0.0
        return out, mask

    assert "input changed" in _hint(ex.check_anomaly, in_place, image, brain)
    assert (image == 0.5).all()  # the lab's array is never handed to the student's function

    def fixed(image, brain, rng):
        mask = np.zeros(image.shape, bool)
        mask[4:8, 4:8, 2:5] = True
        out = image.copy()
        out[mask] = 1.0
        return out, mask

    assert "another seed" in _hint(ex.check_anomaly, fixed, image, brain)
    assert "outside the mask changed" in _hint(
        ex.check_anomaly, lambda im, b, rng: (im + 0.1, _blob(im, b, rng)[1]), image, brain)


# --- lab 08 -----------------------------------------------------------------------------------------

def test_check_optimism_gap():
    table = pd.DataFrame({"family": ["dae"], "spatial_dims": [3], "dataset": ["tumour"], "dice_d": [0.40],
                          "oracle_dice_d": [0.43]})
    where = {"family": "dae", "spatial_dims": 3, "cohort": "tumour"}
    assert isinstance(ex.check_optimism_gap(3.0, table, **where), Passed)
    assert isinstance(ex.check_optimism_gap(3.1, table, **where), Passed)  # read off a rounded table
    assert "fractions" in _hint(ex.check_optimism_gap, 0.03, table, **where)
    assert "sign" in _hint(ex.check_optimism_gap, -3.0, table, **where)
    assert "not done yet" in _hint(ex.check_optimism_gap, None, table, **where)


@pytest.mark.parametrize("question", sorted(ex.QUESTIONS))
def test_check_choice(question):
    right = ex.QUESTIONS[question].answer
    assert f"({right})" in repr(ex.check_choice(question, right))
    wrong = next(letter for letter in ex.QUESTIONS[question].options if letter != right)
    assert "try again" in _hint(ex.check_choice, question, wrong)
    with pytest.raises(ValueError, match="`question` must be one of"):
        ex.check_choice("nope", right)
