"""The seam every reconstruction model follows, and the sample layout 2D and 3D models share.

A model is a ``torch.nn.Module`` that training, validation, inference and the widgets reach only
through :class:`ReconstructionModel`: a training loss on ``(inputs, target)``, validation terms, a
deterministic ``reconstruct``, and an optional ``anomaly_score`` whose default
(:meth:`ModelBase.anomaly_score`) is the residual ``|x - x_hat|``: a family that scores otherwise
(the ceVAE's residual times the ELBO gradient, the z-score floor's ``|x - mu| / sigma``) overrides
it, and post-processing, thresholds, metrics and widgets stay the same for every family. Nothing
outside :mod:`uadlab.models` builds a model class by hand or writes a model's loss:
:mod:`uadlab.models.registry` finds a model by name and builds it from its config dataclass, which is
saved beside every run.

2D models see axial slices, 3D models whole volumes (Bengs et al. 2021, Sec. 2.2);
:func:`volumes_to_samples` and :func:`samples_to_volumes` are the one place that slices and stacks,
and :func:`reconstruct` turns any model into a volume-to-volume map, so 2D and 3D models are scored on
identical volumes (Sec. 2.3).

Shape:
    - volumes: ``(N, X, Y, Z)`` float32 in [0, 1].
    - 3D samples: ``(N, 1, X, Y, Z)``; 2D samples: ``(N * Z, 1, X, Y)``, slice ``k`` of volume ``n``
      at row ``n * Z + k``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from uadlab._checks import check_int
from uadlab.models.precision import autocast
from uadlab.speed.channels_last import to_device

__all__ = ["LossTerms", "ReconstructionModel", "ModelBase", "volumes_to_samples", "samples_to_volumes",
           "reconstruct", "reconstruct_and_score"]


class LossTerms(NamedTuple):
    """A loss and its parts, each a scalar tensor *per sample* (mean over the batch).

    Attributes:
        total: what is minimised.
        recon: reconstruction error, l1 summed over a sample's voxels (the unit every model reports,
            so histories compare across models).
        kl: KL(q(z|x) || N(0, I)) summed over latent units; ``0`` for models without a latent.
    """

    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


@runtime_checkable
class ReconstructionModel(Protocol):
    """What training, validation, inference and evaluation need of a model (all of it).

    Attributes:
        spatial_dims: 2 (the model sees axial slices) or 3 (volumes).
        config: the model's config dataclass (saved with the run; :mod:`uadlab.models.registry`).

    Shape:
        ``inputs``, ``target``, ``samples`` and every returned reconstruction: ``(B, 1, X, Y)`` (2D)
        or ``(B, 1, X, Y, Z)`` (3D), float32 in [0, 1].
    """

    spatial_dims: int
    config: Any

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """Loss of one training batch in train mode: ``inputs`` may be erased, ``target`` never is."""

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, kl)`` in eval mode: reconstructions and the per-sample KL ``(B,)`` (0 without latent)."""

    def reconstruct(self, samples: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (eval mode, no sampling), the shape of ``samples``."""


def _residual(samples: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """The default anomaly score: the voxel-wise l1 residual ``|x - x_hat|`` (Bengs et al. 2021, Sec. 2.3)."""
    return (samples.float() - recon.float()).abs()


class ModelBase(nn.Module):
    """Defaults shared by the registered models: no loss state, gradient training, shape checks.

    Subclasses set ``spatial_dims``, ``image_size``, ``in_channels`` and ``config`` and implement the
    three methods of :class:`ReconstructionModel`. A model fitted in closed form (no gradient
    steps) sets ``fitted_in_closed_form = True`` and implements ``fit(samples)`` instead of a loss.
    A model whose training step measured faster with channels-last weights on a CPU sets
    ``channels_last_on_cpu = True`` (:func:`uadlab.speed.channels_last.to_device`).
    """

    fitted_in_closed_form = False
    channels_last_on_cpu = False
    spatial_dims: int
    image_size: int
    in_channels: int
    config: Any

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``(in_channels, S, S[, S])``."""
        return (self.in_channels,) + (self.image_size,) * self.spatial_dims

    def check_input(self, x: Any, name: str = "x") -> None:
        """Raise unless ``x`` is a ``(B, *input_shape)`` tensor with ``B >= 1``.

        Raises:
            TypeError: ``x`` is not a torch tensor.
            ValueError: ``x`` has another shape.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.spatial_dims + 2 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise ValueError(f"`{name}` must be (B, {', '.join(map(str, self.input_shape))}) for this "
                             f"{self.spatial_dims}D {type(self).__name__}, got shape {tuple(x.shape)}")

    def anomaly_score(self, samples: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Voxel-wise anomaly score of ``samples`` given their reconstruction (eval mode).

        The default is the residual ``|x - x_hat|`` (Bengs et al. 2021, Sec. 2.3); a family that
        scores otherwise overrides this method. Scores are non-negative, higher is more anomalous;
        the threshold search covers ``[0, max(1, largest validation score)]``
        (:func:`uadlab.evaluation.protocol.fit_threshold`).

        Shape:
            ``samples``, ``recon`` and the result: ``(B, 1, X, Y[, Z])``, float32.
        """
        return _residual(samples, recon)

    def loss_state(self) -> dict[str, Any] | None:
        """State of a stateful loss to save with a checkpoint (``None``: the loss has none)."""
        return None

    def load_loss_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`loss_state`; a stateless loss ignores it."""

    def patience_started(self) -> bool:
        """Whether epochs without a better validation score count toward early stopping yet: ``True``
        (a model trained in stages overrides this: f-AnoGAN's validation error moves only in its
        encoder stage).
        """
        return True


def volumes_to_samples(volumes: np.ndarray, spatial_dims: int) -> np.ndarray:
    """A stack of volumes as model samples: ``(N, 1, X, Y, Z)`` (3D) or all axial slices ``(N * Z, 1, X, Y)`` (2D).

    Raises:
        ValueError: ``volumes`` is not ``(N, X, Y, Z)`` or ``spatial_dims`` not 2 or 3.

    >>> volumes_to_samples(np.zeros((2, 4, 5, 6)), 2).shape, volumes_to_samples(np.zeros((2, 4, 5, 6)), 3).shape
    ((12, 1, 4, 5), (2, 1, 4, 5, 6))
    """
    volumes = np.asarray(volumes)
    if volumes.ndim != 4 or spatial_dims not in (2, 3):
        raise ValueError(f"`volumes` must be (N, X, Y, Z) and `spatial_dims` 2 or 3, got shape "
                         f"{volumes.shape} and {spatial_dims!r}")
    if spatial_dims == 3:
        return np.ascontiguousarray(volumes[:, None])
    n, x, y, z = volumes.shape
    return np.ascontiguousarray(volumes.transpose(0, 3, 1, 2).reshape(n * z, 1, x, y))


def samples_to_volumes(samples: np.ndarray, n_volumes: int, spatial_dims: int) -> np.ndarray:
    """Inverse of :func:`volumes_to_samples`: ``(N, X, Y, Z)`` from 2D or 3D samples.

    >>> volumes = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    >>> bool((samples_to_volumes(volumes_to_samples(volumes, 2), 2, 2) == volumes).all())
    True
    """
    if spatial_dims == 3:
        return np.ascontiguousarray(samples[:, 0])
    _, _, x, y = samples.shape
    return np.ascontiguousarray(samples.reshape(n_volumes, -1, x, y).transpose(0, 2, 3, 1))


def reconstruct(model: ReconstructionModel, volume: Any, *, batch_size: int = 64,
                device: str | torch.device | None = None, precision: str | None = None) -> np.ndarray:
    """Reconstruct whole volumes with any 2D or 3D model (eval mode, no gradients).

    A 2D model reconstructs every axial slice ``volume[:, :, k]`` and the slices are stacked back, so
    2D and 3D models are scored on identical volumes (Bengs et al. 2021, Sec. 2.3). The model's
    train/eval mode is restored afterwards.

    Args:
        model: a registered model (:class:`ReconstructionModel`).
        volume: ``(X, Y, Z)`` or a stack ``(N, X, Y, Z)``, numpy or torch, values in [0, 1];
            ``X = Y (= Z for 3D) = model.image_size``.
        batch_size: slices (2D) or volumes (3D) per forward pass.
        device: where to run; the model is moved there. ``None``: where its parameters or buffers are.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:func:`uadlab.models.precision.autocast`).
            ``None``: the model's ``precision`` attribute, which :func:`uadlab.training.load_run` sets to
            the precision the run was trained at, else ``"32"``.

    Returns:
        float32 numpy array of ``volume``'s shape.

    Raises:
        TypeError: ``model`` is not a torch module following :class:`ReconstructionModel`, or
            ``batch_size`` not an int.
        ValueError: ``volume`` is not 3D/4D, ``batch_size`` is not positive, ``precision`` is unknown,
            or the slices or volumes do not fit the model.
    """
    return _run_volumes(model, volume, batch_size, device, precision, score=False)[0]


def reconstruct_and_score(model: ReconstructionModel, volume: Any, *, batch_size: int = 64,
                          device: str | torch.device | None = None,
                          precision: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction and voxel-wise anomaly score of whole volumes (what inference maps are made of).

    As :func:`reconstruct`, then the model's ``anomaly_score(samples, recon)``
    (:meth:`ModelBase.anomaly_score`, by default the residual ``|x - x_hat|``) on the same batch. A
    score that needs gradients (the ceVAE's) enables them itself.

    Returns:
        ``(recon, score)``, float32 numpy arrays of ``volume``'s shape.

    Raises:
        TypeError, ValueError: as :func:`reconstruct`.
    """
    return _run_volumes(model, volume, batch_size, device, precision, score=True)


@torch.no_grad()
def _run_volumes(model: Any, volume: Any, batch_size: Any, device: Any, precision: str | None, *,
                 score: bool) -> tuple[np.ndarray, ...]:
    """The loop of :func:`reconstruct` and :func:`reconstruct_and_score`: ``(recon,)`` or ``(recon, score)``."""
    if not isinstance(model, nn.Module) or not isinstance(model, ReconstructionModel) \
            or getattr(model, "spatial_dims", None) not in (2, 3):
        raise TypeError("`model` must be a reconstruction model (a torch module with spatial_dims 2 or 3 "
                        f"and reconstruct()), got {type(model).__name__}")
    check_int("batch_size", batch_size, "a positive int", lambda v: v > 0)
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim not in (3, 4):
        raise ValueError(f"`volume` must be (X, Y, Z) or (N, X, Y, Z), got shape {array.shape}")
    stack = np.asarray(array[None] if array.ndim == 3 else array, dtype=np.float32)
    samples = volumes_to_samples(stack, model.spatial_dims)
    if device is None:
        device = next(iter(model.state_dict().values())).device
    context = autocast(getattr(model, "precision", "32") if precision is None else precision, device)
    to_device(model, device)
    scorer = getattr(model, "anomaly_score", _residual)
    was_training = model.training
    model.eval()
    outputs: list[list[np.ndarray]] = [[], []] if score else [[]]
    try:
        with context:
            for i in range(0, len(samples), batch_size):
                batch = torch.from_numpy(samples[i:i + batch_size]).to(device)
                recon = model.reconstruct(batch)
                results = (recon, scorer(batch, recon)) if score else (recon,)
                for out, result in zip(outputs, results):
                    out.append(result.detach().float().cpu().numpy())
    finally:
        model.train(was_training)
    volumes = (samples_to_volumes(np.concatenate(out).astype(np.float32, copy=False), len(stack), model.spatial_dims)
               for out in outputs)
    return tuple(v[0] if array.ndim == 3 else v for v in volumes)
