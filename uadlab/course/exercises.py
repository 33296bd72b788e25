"""The labs' exercises: checks a student runs on their own answer, with a hint that points at the mistake.

Each lab has two exercises. The student writes a function or makes a decision in a cell marked as a
solution for nbgrader (``### BEGIN SOLUTION`` / ``### END SOLUTION``; the student version replaces the
region with ``raise NotImplementedError()``), and the next cell, locked and graded, calls one ``check_*``
of this module. A check either returns a :class:`Passed` line that says what was verified and what it
shows, or raises :class:`ExerciseFeedback`, whose message is a hint naming the likely mistake (for
example "you computed |X ∩ Y| / |X ∪ Y|, the Jaccard index"). nbgrader counts a graded cell that raises
as failed, so the same call is the student's feedback and the autograder's test.

Functions the student writes are tested against uadlab's own implementation on random inputs drawn
from a fixed seed, so a check is deterministic. A decision is checked against the lab's own numbers
(the paired interval of lab 03, the zoo table of lab 08); a prediction made before a result
(labs 04 and 05) earns its point for being made, and the feedback says whether the data agreed.

The exercises, by lab:

======  ==========================================  ==========================================
lab     exercise 1                                  exercise 2
======  ==========================================  ==========================================
00      :func:`check_dice` (DICE of one case)       :func:`check_dice_d` (DICE_D pools voxels)
01      :func:`check_kl` (the ELBO's KL term)       :func:`check_reparameterize` (sampling z)
02      :func:`check_threshold_search` (on val)     :func:`check_optimism` (threshold on test)
03      :func:`check_fill` (a new erasing fill)     :func:`check_verdict` (does erasing help?)
04      :func:`check_prediction` (DICE vs size)     :func:`check_lesion_volume` (ml from voxels)
05      :func:`check_prediction` (DICE vs data)     :func:`check_slice_labels` (Fig. 6's labels)
06      :func:`check_bottleneck` (values kept)      :func:`check_choice` ``"spatial-copies"``
07      :func:`check_anomaly` (a synthetic lesion)  :func:`check_choice` ``"labelled-split"``
08      :func:`check_optimism_gap` (zoo table)      :func:`check_choice` ``"report-threshold"``
======  ==========================================  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ExerciseFeedback", "Passed", "QUESTIONS", "check_dice", "check_dice_d", "check_kl", "check_reparameterize",
           "check_threshold_search", "check_optimism", "check_fill", "check_verdict", "check_prediction",
           "check_lesion_volume", "check_slice_labels", "check_bottleneck", "check_anomaly", "check_choice",
           "check_optimism_gap"]

_SEED = 20211  # every check draws its random cases from this seed: a check is deterministic


class ExerciseFeedback(AssertionError):
    """An exercise's check failed; the message is the hint.

    An ``AssertionError``, so nbgrader marks the graded cell as failed. In IPython and Jupyter it shows
    as one line (``✗ hint``) instead of a traceback: the hint is what the student needs.
    """

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the traceback: the hint, as one line."""
        return [f"✗ {self.args[0]}"]


@dataclass(frozen=True)
class Passed:
    """A check passed: what was verified and, where there is one, what it shows.

    Attributes:
        exercise: the exercise, e.g. ``"dice"``.
        message: one or two sentences.
    """

    exercise: str
    message: str

    def __repr__(self) -> str:
        return f"✓ {self.exercise}: {self.message}"

    def _repr_markdown_(self) -> str:
        return f"✓ **{self.exercise}**: {self.message}"


def _fail(hint: str) -> ExerciseFeedback:
    """The feedback a failed check raises (short, so that the hints stay readable in the code)."""
    return ExerciseFeedback(hint)


def _call(fn: Any, name: str, *args: Any) -> Any:
    """``fn(*args)``, with a hint when the function is missing, unfinished or raises."""
    if not callable(fn):
        raise _fail(f"`{name}` must be the function you define in the cell above, got {type(fn).__name__}")
    try:
        return fn(*args)
    except NotImplementedError:
        raise _fail(f"not done yet: write the body of `{name}` in the cell above (it still raises "
                    "NotImplementedError)") from None
    except Exception as error:  # the student's code: any error becomes a hint, not a traceback
        raise _fail(f"`{name}` raised {type(error).__name__}: {error}") from None


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise _fail(f"`{name}` must return one number, got {value!r}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(f"`{name}` must return one number, got {type(value).__name__}") from None
    if array.size != 1:
        raise _fail(f"`{name}` must return one number, got an array of shape {array.shape}")
    return float(array.reshape(()))


def _given(value: Any, name: str) -> float:
    """A number the student sets in the cell above (``None`` until then)."""
    if value is None or value is Ellipsis:
        raise _fail(f"not done yet: set `{name}` in the cell above")
    return _number(value, name)


def _answer(value: Any, name: str, choices: Sequence[str]) -> str:
    if value is None or value is Ellipsis:
        raise _fail(f"not done yet: set `{name}` to one of {list(choices)} in the cell above")
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise _fail(f"`{name}` must be one of {list(choices)}, got {value!r}")
    return value.strip().lower()


def _random_masks(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    density = rng.uniform(0.05, 0.6, size=2)
    return rng.random(shape) < density[0], rng.random(shape) < density[1]


# --------------------------------------------------------------------------------------------------
# Lab 00: DICE and DICE_D


def check_dice(dice: Callable[[np.ndarray, np.ndarray], float]) -> Passed:
    """Lab 00, exercise 1: the student's ``dice(pred, target)`` against uadlab's on random masks.

    DICE = 2|X ∩ Y| / (|X| + |Y|) (Bengs et al. 2021, Sec. 2.3); 0 for an empty prediction of a
    lesion; NaN when both masks are empty (undefined).

    Args:
        dice: ``(pred, target) -> float`` for two bool arrays of one shape ``(*)``.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong value, with the likely mistake (Jaccard index, a missing factor 2,
            the empty cases).
    """
    import warnings

    from uadlab.evaluation import metrics

    pred, target = np.array([True, True, False, False]), np.array([True, False, False, False])
    value = _number(_call(dice, "dice", pred, target), "dice")
    if math.isclose(value, 0.5):
        raise _fail("dice([1,1,0,0], [1,0,0,0]) gave 0.5, |X ∩ Y| / |X ∪ Y|: that is the Jaccard index. "
                    "DICE is 2|X ∩ Y| / (|X| + |Y|) = 2·1 / (2 + 1) = 0.667")
    if math.isclose(value, 1 / 3):
        raise _fail("dice([1,1,0,0], [1,0,0,0]) gave 0.333: the factor 2 of 2|X ∩ Y| / (|X| + |Y|) is missing")
    rng = np.random.default_rng(_SEED)
    for case in range(50):
        shape = tuple(int(s) for s in rng.integers(2, 9, size=int(rng.integers(1, 4))))
        pred, target = _random_masks(rng, shape)
        if not target.any():
            target.flat[0] = True
        expected = metrics.dice(pred, target)
        value = _number(_call(dice, "dice", pred.copy(), target.copy()), "dice")
        if not math.isclose(value, expected, abs_tol=1e-9):
            raise _fail(f"random case {case} (shape {shape}, {int(pred.sum())} predicted and {int(target.sum())} "
                        f"lesion voxels, {int((pred & target).sum())} shared): expected {expected:.4f}, got "
                        f"{value:.4f}. Count voxels of bool arrays (np.count_nonzero), not their values")
    lesion = np.zeros(8, bool)
    lesion[:3] = True
    empty_pred = _number(_call(dice, "dice", np.zeros(8, bool), lesion), "dice")
    if empty_pred != 0.0:
        raise _fail(f"an empty prediction of a lesion must score 0 (nothing found), got {empty_pred:.4f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            both_empty = dice(np.zeros(8, bool), np.zeros(8, bool))
        except Exception as error:  # 0 / 0 in plain Python, or the student's own check
            both_empty = type(error).__name__
    if not (isinstance(both_empty, float | np.floating) and math.isnan(both_empty)):
        raise _fail(f"two empty masks give 0 / 0: DICE is undefined there, return float('nan') "
                    f"(uadlab warns and returns NaN), got {both_empty!r}")
    return Passed("dice", "matches uadlab.evaluation.metrics.dice on 50 random cases, an empty prediction (0) "
                          "and two empty masks (NaN)")


def check_dice_d(dice_d: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]) -> Passed:
    """Lab 00, exercise 2: the student's pooled ``dice_d(preds, targets)`` against uadlab's.

    DICE_D sums intersections and sizes over every subject before dividing (Bengs et al. 2021,
    Sec. 2.3), so a large lesion weighs more than a small one; the mean of per-subject DICEs is DICE_S.

    Args:
        dice_d: ``(preds, targets) -> float`` for two lists of bool volumes, subject by subject.

    Returns:
        :class:`Passed`, with DICE_D against DICE_S on subjects with one large and two small lesions.

    Raises:
        ExerciseFeedback: a wrong value; the mean of per-subject DICEs (DICE_S) is named.
    """
    from uadlab.evaluation import metrics

    rng = np.random.default_rng(_SEED + 1)
    big, small1, small2 = (np.zeros((16, 16, 8), bool) for _ in range(3))
    big[2:14, 2:14, 1:7] = True
    small1[5:7, 5:7, 3:5] = True
    small2[9:11, 3:5, 2:4] = True
    targets = [big, small1, small2]
    found = [big.copy(), np.zeros_like(small1), small2.copy()]
    found[0][2:6] = False  # the large lesion mostly found, the first small one missed, the second exact
    expected = metrics.dice_dataset(found, targets)
    per_subject = float(np.nanmean(metrics.dice_subjects(found, targets)))
    value = _number(_call(dice_d, "dice_d", [p.copy() for p in found], [t.copy() for t in targets]), "dice_d")
    if math.isclose(value, per_subject, abs_tol=1e-9):
        raise _fail(f"you averaged one DICE per subject ({value:.3f}): that is DICE_S. DICE_D pools: sum "
                    "|X ∩ Y| and |X| + |Y| over all subjects, then divide once")
    if not math.isclose(value, expected, abs_tol=1e-9):
        raise _fail(f"three subjects (one large lesion mostly found, one small missed, one small exact): "
                    f"expected DICE_D {expected:.4f}, got {value:.4f}")
    for case in range(20):
        n = int(rng.integers(1, 5))
        pairs = [_random_masks(rng, (6, 5, 4)) for _ in range(n)]
        preds, lesions = [p for p, _ in pairs], [t for _, t in pairs]
        lesions[0].flat[0] = True
        value = _number(_call(dice_d, "dice_d", preds, lesions), "dice_d")
        if not math.isclose(value, metrics.dice_dataset(preds, lesions), abs_tol=1e-9):
            raise _fail(f"random case {case} ({n} subjects): expected {metrics.dice_dataset(preds, lesions):.4f}, "
                        f"got {value:.4f}")
    return Passed("dice_d", f"matches uadlab's DICE_D. On the three subjects DICE_D = {expected:.2f} but the mean "
                            f"DICE_S = {per_subject:.2f}: pooling lets the large lesion, mostly found, outweigh "
                            "the small one that was missed")


# --------------------------------------------------------------------------------------------------
# Lab 01: the ELBO


def check_kl(kl_divergence: Callable[[Any, Any], Any]) -> Passed:
    """Lab 01, exercise 1: the ELBO's KL term, ``KL(N(mu, exp(logvar)) || N(0, I))`` per sample.

    ``0.5 · Σ_j (mu_j² + exp(logvar_j) − 1 − logvar_j)``, summed over latent units: ``(B,)``
    (Kingma and Welling 2014, App. B; :func:`uadlab.models.vae.kl_divergence`).

    Args:
        kl_divergence: ``(mu, logvar) -> (B,)`` for torch tensors ``(B, L)``.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong shape or value, with the likely mistake (sign, factor 0.5, mean
            instead of sum, logvar used as a variance).
    """
    import torch

    from uadlab.models.vae import kl_divergence as reference

    generator = torch.Generator().manual_seed(_SEED)
    mu, logvar = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    expected = reference(mu, logvar)
    value = _call(kl_divergence, "kl_divergence", mu.clone(), logvar.clone())
    value = torch.as_tensor(value, dtype=torch.float64)
    if value.shape != expected.shape:
        hint = " (you summed or averaged over the batch too)" if value.numel() == 1 else ""
        raise _fail(f"return one KL per sample, shape (B,) = {tuple(expected.shape)}, got {tuple(value.shape)}{hint}")
    expected = expected.double()
    if torch.allclose(value, expected, rtol=1e-5):
        return Passed("kl_divergence", "matches uadlab.models.vae.kl_divergence on random (B, L) = (4, 8) latents; "
                                       "it is 0 only for mu = 0, logvar = 0, the prior N(0, I)")
    if torch.allclose(value, -expected, rtol=1e-5):
        raise _fail("the sign is flipped: KL divergence is never negative")
    if torch.allclose(value, 2 * expected, rtol=1e-5):
        raise _fail("twice the expected value: the factor 0.5 is missing")
    if torch.allclose(value, expected / mu.shape[1], rtol=1e-5):
        raise _fail("you averaged over the latent units: sum them (each unit is one independent Gaussian)")
    raise _fail("wrong values: KL = 0.5 · Σ_j (mu_j² + exp(logvar_j) − 1 − logvar_j); logvar is the log of the "
                "variance, so the variance is exp(logvar)")


def check_reparameterize(reparameterize: Callable[[Any, Any, Any], Any]) -> Passed:
    """Lab 01, exercise 2: the reparameterisation trick, ``z = mu + exp(0.5 · logvar) · eps``.

    Sampling through ``eps ~ N(0, I)`` keeps ``z`` differentiable in ``mu`` and ``logvar``
    (Kingma and Welling 2014, Sec. 2.4).

    Args:
        reparameterize: ``(mu, logvar, eps) -> z``, torch tensors of one shape ``(B, L)``.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong value, e.g. the variance used as the standard deviation.
    """
    import torch

    generator = torch.Generator().manual_seed(_SEED + 1)
    mu, logvar, eps = (torch.randn(3, 5, generator=generator) for _ in range(3))
    value = torch.as_tensor(_call(reparameterize, "reparameterize", mu.clone(), logvar.clone(), eps.clone()))
    if value.shape != mu.shape:
        raise _fail(f"z must have the shape of mu, {tuple(mu.shape)}, got {tuple(value.shape)}")
    if torch.allclose(value, mu + torch.exp(0.5 * logvar) * eps, rtol=1e-5):
        mu, logvar = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        z = reparameterize(mu, logvar, eps)
        grads = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True) \
            if isinstance(z, torch.Tensor) and z.requires_grad else (None, None)
        if any(g is None or not bool(g.abs().sum() > 0) for g in grads):
            raise _fail("z must stay a torch tensor computed from mu and logvar with torch operations, "
                                   "so gradients reach both (the encoder learns through them)")
        return Passed("reparameterize", "z = mu + exp(0.5 · logvar) · eps; the noise is an input, so gradients "
                                        "flow to mu and logvar")
    if torch.allclose(value, mu + torch.exp(logvar) * eps, rtol=1e-5):
        raise _fail("exp(logvar) is the variance; scale eps by the standard deviation, exp(0.5 · logvar)")
    if torch.allclose(value, mu + logvar * eps, rtol=1e-5):
        raise _fail("logvar is a log-variance: the standard deviation is exp(0.5 · logvar)")
    if torch.allclose(value, torch.exp(0.5 * logvar) * eps, rtol=1e-5):
        raise _fail("the mean is missing: z = mu + std · eps")
    raise _fail("wrong values: z = mu + exp(0.5 · logvar) · eps")


# --------------------------------------------------------------------------------------------------
# Lab 02: thresholds


def check_threshold_search(search: Callable[[list, list, np.ndarray], float]) -> Passed:
    """Lab 02, exercise 1: the threshold among candidates with the best DICE_D on validation maps.

    The segmentation is ``score > threshold`` (strict); the first best candidate wins, as
    :func:`uadlab.evaluation.metrics.grid_threshold_search` (Bengs et al. 2021, Sec. 2.3, search the
    threshold on validation data).

    Args:
        search: ``(scores, labels, candidates) -> threshold``: lists of ``(*)`` score and bool lesion
            volumes, ``(K,)`` candidate thresholds.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong threshold, e.g. the best DICE returned instead of its threshold, or
            per-subject DICE (DICE_S) maximised.
    """
    from uadlab.evaluation import metrics

    rng = np.random.default_rng(_SEED + 2)
    for case in range(15):
        n = int(rng.integers(2, 5))
        labels = [rng.random((6, 6, 4)) < rng.uniform(0.02, 0.5) for _ in range(n)]
        scores = [np.clip(rng.normal(0.3, rng.uniform(0.05, 0.3), lab.shape) + 0.3 * lab, 0, 1) for lab in labels]
        candidates = np.round(np.linspace(0.1, 0.9, int(rng.integers(5, 12))), 3)
        expected = metrics.grid_threshold_search(scores, labels, candidates)
        value = _number(_call(search, "threshold_search", [s.copy() for s in scores], [v.copy() for v in labels],
                              candidates.copy()), "threshold_search")
        if math.isclose(value, expected):
            continue
        best_dice = max(metrics.dice_dataset([s > t for s in scores], labels) for t in candidates)
        if math.isclose(value, best_dice):
            raise _fail("you returned the best DICE_D; return the threshold that reaches it")
        if not np.isclose(candidates, value).any():
            raise _fail(f"return one of the candidates, got {value:.4f} (candidates {candidates.tolist()})")
        at_value = metrics.dice_dataset([s > value for s in scores], labels)
        per_subject = [float(np.nanmean(metrics.dice_subjects([s > t for s in scores], labels))) for t in candidates]
        if math.isclose(value, candidates[int(np.argmax(per_subject))]):
            raise _fail("you maximised the mean per-subject DICE (DICE_S); maximise the pooled DICE_D")
        if math.isclose(at_value, metrics.dice_dataset([s > expected for s in scores], labels)):
            raise _fail("a tie: return the first (smallest) candidate with the best DICE_D")
        raise _fail(f"random case {case}: expected {expected} (DICE_D {best_dice:.3f}), got {value} (DICE_D "
                    f"{at_value:.3f}); segment with score > threshold and pool voxels over subjects")
    return Passed("threshold_search", "matches uadlab.evaluation.metrics.grid_threshold_search on 15 random "
                                      "validation sets")


def check_optimism(honest: float, optimistic: float, val_maps: Mapping[str, Any],
                   test_maps: Mapping[str, Any]) -> Passed:
    """Lab 02, exercise 2: the test DICE_D at the validation threshold against one fitted on the test split.

    Fitting the threshold on the test labels reports an optimistic number that no user could reach
    on new data (Bengs et al. 2021, Sec. 2.3 search on validation; the zoo's "optimism gap").

    Args:
        honest: the student's test DICE_D at the threshold fitted on ``val_maps``.
        optimistic: the student's test DICE_D at a threshold fitted on ``test_maps``.
        val_maps, test_maps: ``{subject id: SubjectMaps}`` of the lab (:func:`uadlab.evaluation.inference.predict`).

    Returns:
        :class:`Passed`, with the gap in DICE_D points.

    Raises:
        ExerciseFeedback: a value that does not match, or the two swapped.
    """
    from uadlab.evaluation import metrics
    from uadlab.evaluation.protocol import fit_threshold

    honest, optimistic = _given(honest, "honest"), _given(optimistic, "optimistic")
    test = list(test_maps.values())
    masks = [m.lesion_mask for m in test]

    def dice_at(threshold: float) -> float:
        return metrics.dice_dataset([m.anomaly_map > threshold for m in test], masks)

    expected_honest, expected_optimistic = dice_at(fit_threshold(val_maps)), dice_at(fit_threshold(test_maps))
    swapped = math.isclose(honest, expected_optimistic, abs_tol=1e-6) and math.isclose(optimistic, expected_honest,
                                                                                       abs_tol=1e-6)
    if swapped and not math.isclose(honest, optimistic):
        raise _fail("the two are swapped: `honest` uses the threshold fitted on validation")
    if not math.isclose(honest, expected_honest, abs_tol=1e-6):
        raise _fail("`honest` is not DICE_D of the test maps at the threshold fitted on validation "
                               "(fit_threshold(val_maps)); pool the voxels of every test subject (dice_dataset)")
    if not math.isclose(optimistic, expected_optimistic, abs_tol=1e-6):
        raise _fail("`optimistic` is not DICE_D of the test maps at a threshold fitted on the test maps "
                               "(fit_threshold(test_maps))")
    gap = 100 * (optimistic - honest)
    return Passed("optimism", f"fitting on test would report DICE_D {100 * optimistic:.1f} instead of "
                              f"{100 * honest:.1f}, {gap:+.1f} points that no one could reach on new patients")


# --------------------------------------------------------------------------------------------------
# Lab 03: erasing


def check_fill(fill: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]) -> Passed:
    """Lab 03, exercise 1: a new erasing fill, ``fill(image, erased, rng) -> erased image``.

    Like the paper's fills ``0`` and ``n`` (Bengs et al. 2021, Sec. 2.2) it must change the erased
    voxels only, return a new array (the input is also the training target and must never change) and
    draw any randomness from ``rng`` (so that a seed repeats it).

    Args:
        fill: ``(image (X, Y, Z) float32, erased (X, Y, Z) bool, rng) -> (X, Y, Z)``.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: the input changed, voxels outside the box changed, nothing changed inside,
            a wrong shape, or two runs with one seed differ.
    """
    rng = np.random.default_rng(_SEED + 3)
    image = rng.random((12, 10, 8)).astype(np.float32)
    erased = np.zeros(image.shape, bool)
    erased[3:8, 2:6, 1:5] = True
    before = image.copy()
    out = _call(fill, "fill", image, erased, np.random.default_rng(1))
    if not np.array_equal(image, before):
        raise _fail("your fill changed its input: the input is also the training target, which erasing must never "
                    "touch. Work on a copy (image.copy())")
    out = np.asarray(out)
    if out.shape != image.shape:
        raise _fail(f"return the whole image, shape {image.shape}, got {out.shape}")
    if not np.array_equal(out[~erased], image[~erased]):
        raise _fail("voxels outside the erased box changed: write only image[erased]")
    if np.allclose(out[erased], image[erased]):
        raise _fail("the erased box still holds the original voxels: nothing was erased")
    again = np.asarray(_call(fill, "fill", image.copy(), erased, np.random.default_rng(1)))
    if not np.array_equal(out, again):
        raise _fail("two calls with the same seed differ: draw random values from `rng` (rng.random, rng.choice), "
                    "not from np.random")
    return Passed("fill", f"changes only the {int(erased.sum())} erased voxels, leaves its input untouched and "
                          "repeats with a seed")


_VERDICTS = ("better", "worse", "no difference")


def check_verdict(verdict: str, paired: Any) -> Passed:
    """Lab 03, exercise 2: read a paired difference (erasing minus its baseline) and its 95 % interval.

    "better" or "worse" only when the interval excludes 0; otherwise "no difference" (on these test
    subjects, for this trained model: one seed does not speak for the method).

    Args:
        verdict: ``"better"``, ``"worse"`` or ``"no difference"``.
        paired: :func:`uadlab.evaluation.analysis.ablation_differences` of the lab (columns ``experiment``,
            ``baseline``, ``cohort``, ``difference``, ``ci_low``, ``ci_high``); its last row, a 3D
            experiment against 3D-None, is judged.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a verdict the interval does not support, with the interval.
    """
    verdict = _answer(verdict, "VERDICT", _VERDICTS)
    row = paired.iloc[-1]
    low, high, difference = (100 * float(row[k]) for k in ("ci_low", "ci_high", "difference"))
    expected = "better" if low > 0 else "worse" if high < 0 else "no difference"
    interval = f"{difference:+.1f} points, 95 % interval [{low:+.1f}, {high:+.1f}]"
    what = f"{row['experiment']} − {row['baseline']} on {row['cohort']}: {interval}"
    if verdict != expected:
        if expected == "no difference":
            raise _fail(f"{what}. The interval holds 0: the data cannot tell the two apart, whatever the sign of "
                        "the mean")
        raise _fail(f"{what}. The whole interval is on one side of 0: that is '{expected}'")
    return Passed("verdict", f"{what}: '{expected}'. One training seed: the paired interval covers the test "
                             "subjects, not the training randomness (docs/lab_seeds.md has 3 seeds)")


# --------------------------------------------------------------------------------------------------
# Labs 04 and 05: predictions, lesion volume, slice labels

_TRENDS = ("rises", "falls", "flat")
_MIN_ANOMALY_VOXELS = 20  # a synthetic anomaly smaller than this teaches the segmenter little (lab 07)


def check_prediction(prediction: str, x: Sequence[float], y: Sequence[float], *, what: str) -> Passed:
    """Labs 04 and 05: a prediction made before the result ("rises", "falls" or "flat"), and what the data say.

    The point is for predicting: any of the three passes. The message compares it with the trend of
    ``y`` against ``x`` (Spearman's rank correlation; "flat" when ``|rho| < 0.3``).

    Args:
        prediction: ``"rises"``, ``"falls"`` or ``"flat"``.
        x, y: the measured pairs, e.g. lesion volume (ml) and DICE_S of each test subject.
        what: what ``y`` against ``x`` is, for the message, e.g. ``"DICE_S against lesion volume"``.

    Returns:
        :class:`Passed`, saying whether the data agreed.

    Raises:
        ExerciseFeedback: no prediction made.
    """
    from scipy.stats import spearmanr

    prediction = _answer(prediction, "PREDICTION", _TRENDS)
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[keep])) < 3 or np.ptp(y[keep]) == 0:
        return Passed("prediction", f"you predicted that {what} {prediction}; too few distinct points here to tell")
    rho = float(spearmanr(x[keep], y[keep]).statistic)
    observed = "rises" if rho >= 0.3 else "falls" if rho <= -0.3 else "flat"
    agreed = "as you predicted" if observed == prediction else f"you predicted '{prediction}'"
    return Passed("prediction", f"{what} {observed} (Spearman rho {rho:+.2f} over {int(keep.sum())} points); "
                                f"{agreed}")


def check_lesion_volume(lesion_volume_ml: Callable[[np.ndarray, Sequence[float]], float]) -> Passed:
    """Lab 04, exercise 2: a lesion's volume in millilitres from its mask and the voxel size.

    ``count × (voxel volume in mm³) / 1000`` (1 ml = 1 cm³ = 1000 mm³).

    Args:
        lesion_volume_ml: ``(mask (X, Y, Z) bool, spacing_mm (3,)) -> ml``.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong volume; mm³ instead of ml and a forgotten spacing are named.
    """
    rng = np.random.default_rng(_SEED + 4)
    for _ in range(10):
        mask = rng.random((9, 8, 7)) < rng.uniform(0.05, 0.5)
        spacing = tuple(float(s) for s in np.round(rng.uniform(0.8, 4.0, 3), 2))
        count = int(mask.sum())
        expected = count * math.prod(spacing) / 1000
        value = _number(_call(lesion_volume_ml, "lesion_volume_ml", mask.copy(), spacing), "lesion_volume_ml")
        if math.isclose(value, expected, rel_tol=1e-6):
            continue
        if math.isclose(value, expected * 1000, rel_tol=1e-6):
            raise _fail("that is mm³: divide by 1000 for millilitres (1 ml = 1 cm³ = 1000 mm³)")
        if math.isclose(value, count / 1000, rel_tol=1e-6) or math.isclose(value, count, rel_tol=1e-6):
            raise _fail("multiply the voxel count by one voxel's volume, the product of the three spacings (mm³)")
        raise _fail(f"{count} voxels of {spacing} mm: expected {expected:.4f} ml, got {value:.4f}")
    return Passed("lesion_volume_ml", "voxel count × voxel volume (mm³) / 1000 on 10 random masks and spacings")


def check_slice_labels(slice_labels: Callable[[np.ndarray], np.ndarray]) -> Passed:
    """Lab 05, exercise 2: the label of every axial slice for Fig. 6's slice-wise detection.

    Slice ``k`` is ``volume[:, :, k]`` (last axis); it is anomalous when it holds any lesion voxel
    (Bengs et al. 2021, Sec. 2.3; :func:`uadlab.evaluation.metrics.slice_scores`).

    Args:
        slice_labels: ``lesion_mask (X, Y, Z) bool -> (Z,) bool``.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong shape (another axis) or labels ("all" instead of "any").
    """
    rng = np.random.default_rng(_SEED + 5)
    mask = np.zeros((7, 6, 9), bool)
    mask[2:5, 1:4, 3:6] = True
    mask[rng.integers(0, 7), rng.integers(0, 6), 8] = True
    expected = mask.any(axis=(0, 1))
    value = np.asarray(_call(slice_labels, "slice_labels", mask.copy()))
    if value.shape != expected.shape:
        raise _fail(f"one label per axial slice, the last axis: shape {expected.shape}, got {value.shape}")
    if value.dtype != bool and not np.isin(value, (0, 1)).all():
        raise _fail("return booleans (True: the slice holds a lesion voxel)")
    value = value.astype(bool)
    if np.array_equal(value, mask.all(axis=(0, 1))):
        raise _fail("a slice is anomalous when it holds ANY lesion voxel, not when all its voxels are lesion")
    if not np.array_equal(value, expected):
        raise _fail(f"expected {expected.astype(int).tolist()}, got {value.astype(int).tolist()}")
    return Passed("slice_labels", f"{int(expected.sum())} of {expected.size} axial slices hold a lesion voxel, "
                                  "including one with a single voxel")


# --------------------------------------------------------------------------------------------------
# Lab 06: bottlenecks


def check_bottleneck(answers: Mapping[str, int], models: Mapping[str, Any], image_size: int) -> Passed:
    """Lab 06, exercise 1: how many numbers each VAE's bottleneck holds (one latent mean per unit).

    A dense VAE keeps ``latent_dim`` numbers; a spatial VAE keeps a feature map, ``N × h × w[× d]``
    (Lambert et al. 2021, Sec. 2). The more it keeps, the more of the input it can copy, lesion included.

    Args:
        answers: the student's ``{model name: number}``.
        models: ``{model name: VAE}`` with the same names; each is run once on a zero input
            ``(1, 1, image_size, …)`` to read its ``mu``'s size.
        image_size: edge of the model's input in voxels.

    Returns:
        :class:`Passed`, with each count as a fraction of the input's voxels.

    Raises:
        ExerciseFeedback: a missing model or a wrong count (shapes printed).
    """
    import torch

    if not isinstance(answers, Mapping) or not answers:
        raise _fail("not done yet: fill `BOTTLENECK` with one number per model")
    lines = []
    for name, model in models.items():
        if name not in answers or answers[name] is None:
            raise _fail(f"`BOTTLENECK` has no number for {name!r}")
        dims = model.spatial_dims
        with torch.no_grad():
            mu = model.eval()(torch.zeros((1, 1) + (image_size,) * dims)).mu
        expected = int(mu[0].numel())
        value = _number(answers[name], f"BOTTLENECK[{name!r}]")
        if value != expected:
            raise _fail(f"{name}: its mu has shape {tuple(mu.shape[1:])} per sample, {expected} numbers; got {value:g}")
        lines.append(f"{name} {expected} ({100 * expected / image_size ** dims:.1f} % of the input's voxels)")
    return Passed("bottleneck", "; ".join(lines))


# --------------------------------------------------------------------------------------------------
# Lab 07: a synthetic anomaly


def check_anomaly(make_anomaly: Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]],
                  image: np.ndarray, brain_mask: np.ndarray) -> Passed:
    """Lab 07, exercise 1: a synthetic anomaly the segmenter can learn from (Behrendt et al. 2024, Sec. 2.2).

    ``make_anomaly(image, brain_mask, rng) -> (anomalous image, mask)``: the mask is the label, so it
    must be exactly where the image changed, inside the brain, at least :data:`_MIN_ANOMALY_VOXELS` voxels and at
    most 20 % of the brain; the input
    stays untouched (it is a healthy volume reused for other copies) and a seed repeats the draw
    while another seed moves it.

    Args:
        make_anomaly: the student's function.
        image: ``(X, Y, Z)`` healthy volume, intensities in [0, 1].
        brain_mask: ``(X, Y, Z)`` bool.

    Returns:
        :class:`Passed`, with the anomaly's size.

    Raises:
        ExerciseFeedback: the first rule broken, named.
    """
    image, brain = np.array(image, np.float32), np.array(brain_mask, bool)  # copies: the lab's arrays stay safe
    before = image.copy()
    result = _call(make_anomaly, "make_anomaly", image, brain, np.random.default_rng(0))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise _fail("return two arrays: (anomalous image, mask)")
    out, mask = np.asarray(result[0]), np.asarray(result[1])
    if not np.array_equal(image, before):
        raise _fail("the healthy input changed: work on a copy (image.copy())")
    if out.shape != image.shape or mask.shape != image.shape:
        raise _fail(f"image and mask must have the input's shape {image.shape}, got {out.shape} and {mask.shape}")
    mask = mask.astype(bool)
    fraction = mask.sum() / max(int(brain.sum()), 1)
    if not mask.any():
        raise _fail("the mask is empty: the segmenter would learn that nothing is ever anomalous")
    if (mask & ~brain).any():
        raise _fail(f"{int((mask & ~brain).sum())} mask voxels lie outside the brain mask: keep the anomaly inside")
    if mask.sum() < _MIN_ANOMALY_VOXELS or fraction > 0.2:
        raise _fail(f"the anomaly covers {int(mask.sum())} voxels, {100 * fraction:.2f} % of the brain; make "
                               f"it at least {_MIN_ANOMALY_VOXELS} voxels and at most 20 % of the brain")
    if not np.array_equal(out[~mask], image[~mask]):
        raise _fail("voxels outside the mask changed: the label would miss them")
    if np.mean(np.abs(out[mask] - image[mask]) > 1e-3) < 0.5:
        raise _fail("fewer than half the mask's voxels changed: the label claims an anomaly the image does not show")
    again = _call(make_anomaly, "make_anomaly", image.copy(), brain.copy(), np.random.default_rng(0))
    other = _call(make_anomaly, "make_anomaly", image.copy(), brain.copy(), np.random.default_rng(1))
    if not all(isinstance(r, tuple) and len(r) == 2 for r in (again, other)):
        raise _fail("return two arrays: (anomalous image, mask)")
    if not np.array_equal(np.asarray(again[1]).astype(bool), mask):
        raise _fail("the same seed gave another mask: draw from `rng`, not np.random")
    if np.array_equal(np.asarray(other[1]).astype(bool), mask):
        raise _fail("another seed gave the same mask: draw the position or shape from `rng`, or every copy teaches "
                    "the same spot")
    return Passed("make_anomaly", f"{int(mask.sum())} voxels ({100 * fraction:.1f} % of the brain), labelled exactly "
                                  "where the image changed, repeatable with a seed")


# --------------------------------------------------------------------------------------------------
# Lab 08: the zoo


def check_optimism_gap(gap: float, table: Any, *, family: str, spatial_dims: int, cohort: str) -> Passed:
    """Lab 08, exercise 1: one family's optimism gap read from the zoo table.

    The gap is the oracle DICE_D (threshold fitted on the test labels) minus the DICE_D at the
    threshold fitted on validation; both are columns of ``zoo.csv`` (fractions). Given in points.

    Args:
        gap: the student's gap, DICE_D points.
        table: the zoo table (``zoo.csv`` as a DataFrame, mean rows over seeds).
        family, spatial_dims, cohort: the row.

    Returns:
        :class:`Passed`.

    Raises:
        ExerciseFeedback: a wrong gap; fractions instead of points and a swapped sign are named.
    """
    gap = _given(gap, "gap")
    rows = table[(table["family"] == family) & (table["spatial_dims"] == spatial_dims) & (table["dataset"] == cohort)]
    if rows.empty:
        raise _fail(f"no zoo row for {family} {spatial_dims}D on {cohort}")
    row = rows.iloc[0]
    expected = 100 * (float(row["oracle_dice_d"]) - float(row["dice_d"]))
    if math.isclose(gap, expected, abs_tol=0.15):  # read off a table rounded to 3 decimals
        return Passed("gap", f"{family} {spatial_dims}D on {cohort}: the oracle reports {expected:.1f} DICE_D points "
                             "more than a threshold fitted without test labels")
    if math.isclose(gap, expected / 100, abs_tol=1.5e-3):
        raise _fail("the table holds fractions: give the gap in points (× 100)")
    if math.isclose(gap, -expected, abs_tol=0.15):
        raise _fail("the sign is flipped: oracle minus validation threshold")
    raise _fail(f"not the gap of {family} {spatial_dims}D on {cohort}: oracle_dice_d − dice_d of that row, "
                           "in points")


@dataclass(frozen=True)
class _Question:
    options: dict[str, str]
    answer: str
    why: str


#: Multiple-choice questions of the labs: the option letters, the right one, and why (the feedback).
QUESTIONS: dict[str, _Question] = {
    "spatial-copies": _Question(
        {"a": "its bottleneck keeps a feature map with the image's layout and enough numbers to copy the input, "
              "lesion included",
         "b": "it was trained for more epochs than the dense VAE",
         "c": "its training set held lesions"},
        "a", "a spatial latent is a small image: it passes the lesion through almost like a skip connection, so "
             "the residual misses it (Lambert et al. 2021, Sec. 4). Training sets hold healthy brains only"),
    "labelled-split": _Question(
        {"a": "the test split of each lesion cohort",
         "b": "the validation split of each lesion cohort, the same cases that fit the threshold",
         "c": "the validation split of each lesion cohort, minus the cases that fit the threshold"},
        "c", "labelled cases come from validation, and the threshold is fitted on the other validation cases, so no "
             "test subject ever reaches a supervised loss or a threshold (Behrendt et al. 2024, Sec. 3)"),
    "report-threshold": _Question(
        {"a": "the oracle DICE_D, the best threshold there is",
         "b": "DICE_D at the threshold fitted on validation",
         "c": "DICE_D at 1 % false positives on healthy validation brains"},
        "b", "the oracle uses the test labels and is an upper bound, never a result; the 1 % FPR threshold "
             "needs no labels and is the label-free alternative, but Table 1's protocol fits on validation"),
}


def check_choice(question: str, answer: str) -> Passed:
    """A multiple-choice question of :data:`QUESTIONS` (labs 06, 07, 08): the right letter, and why.

    Args:
        question: a key of :data:`QUESTIONS`.
        answer: an option letter.

    Returns:
        :class:`Passed`, with why.

    Raises:
        ValueError: an unknown ``question`` (a lab's own error, not the student's).
        ExerciseFeedback: no answer, an unknown letter, or a wrong one (why it is wrong is not given away).
    """
    if question not in QUESTIONS:
        raise ValueError(f"`question` must be one of {sorted(QUESTIONS)}, got {question!r}")
    q = QUESTIONS[question]
    answer = _answer(answer, "ANSWER", tuple(q.options))
    if answer != q.answer:
        raise _fail(f"not ({answer}) '{q.options[answer]}': look again at what the figure above shows, then try again")
    return Passed(question, f"({answer}) {q.why}")
