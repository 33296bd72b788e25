"""f-AnoGAN's encoder loss and anomaly score (Schlegl et al., MedIA 2019): the parts of the future ``fanogan``.

Schlegl, Seeböck, Waldstein, Langs and Schmidt-Erfurth, "f-AnoGAN: Fast unsupervised anomaly
detection with generative adversarial networks" (Medical Image Analysis 54, 2019), train a
Wasserstein GAN with gradient penalty on healthy images, then, with generator ``G`` and critic
fixed, an encoder ``E`` that maps an image to the latent code ``G`` reconstructs it from. Of their
encoder trainings, ``izi_f`` works best: the image is encoded and regenerated (image -> z -> image)
and compared with the input both voxel-wise and in the critic's feature space ``f`` (its last hidden
layer), so that the regenerated image must also *look* like the input to the critic:

``L_izi_f(x) = ||x - G(E(x))||^2 / n + kappa * ||f(x) - f(G(E(x)))||^2 / n_d``

with ``n`` the voxels of an image and ``n_d`` the features. The anomaly score of an image is the same
sum, ``A(x) = A_R(x) + kappa * A_D(x)`` (residual plus weighted feature distance); the voxel-wise
map for localisation is the residual of ``x`` and ``G(E(x))``. This module holds the loss and the
score; the model (networks, the WGAN-GP stage and the encoder stage) is the next step of issue 26.

Reference facts (tSchlegl/f-AnoGAN, the authors' TensorFlow code):

- ``z_encoding_izif.py``, ``train_enc_izi(..., loss_type='MSE', kappa=1.0)``: ``loss = MSE(x,
  G(E(x))) + kappa * MSE(f(G(E(x))), f(x))``, each ``tf.reduce_mean`` over the batch and all voxels
  (or features): the batch mean of the per-image terms above. ``kappa = 1`` by default.
- ``anomaly_detection.py``, ``anomaly_scoring(..., dual_iloss=True)``: the per-image ``MSE(x, G(E(x)),
  axis=1) + kappa * MSE(f(G(E(x))), f(x), axis=1)``.
- ``wgangp_64x64.py``, ``GoodDiscriminator``: ``f`` is the critic's flattened last hidden layer
  (``4 * 4 * 8 * dim`` values), before the linear output; images are scaled to ``[-1, 1]``.

Shape:
    - ``image``, ``recon``: ``(B, C, ...)`` any spatial layout, the same for both.
    - ``image_features``, ``recon_features``: ``(B, ...)``, the same for both.
    - :func:`izi_f_score`: ``(B,)``; :func:`izi_f_loss`: a scalar.
"""

from __future__ import annotations

import torch

from uadlab._checks import check_real

__all__ = ["IZI_F_KAPPA", "izi_f_score", "izi_f_loss"]

#: Weight of the critic-feature term (the authors' code: ``kappa=1.0``).
IZI_F_KAPPA = 1.0


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor, other: str) -> None:
    for label, value in ((name, a), (other, b)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{label}` must be a tensor, got {type(value).__name__}")
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"`{name}` and `{other}` must have one shape (B, ...), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def izi_f_score(image: torch.Tensor, recon: torch.Tensor, image_features: torch.Tensor,
                recon_features: torch.Tensor, *, kappa: float = IZI_F_KAPPA) -> torch.Tensor:
    """Per image: ``mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)`` (Schlegl et al. 2019).

    The encoder's ``izi_f`` training loss of one image and its anomaly score ``A(x) = A_R(x) + kappa
    A_D(x)``: the mean squared residual over the ``n`` voxels plus ``kappa`` times the mean squared
    difference of the critic's ``n_d`` features.

    Args:
        image: ``x``, ``(B, C, ...)``, the intensity scale the GAN was trained on.
        recon: ``G(E(x))``, the shape of ``image``.
        image_features: ``f(x)``, the critic's last hidden layer, ``(B, ...)``.
        recon_features: ``f(G(E(x)))``, the shape of ``image_features``.
        kappa: weight of the feature term, ``>= 0``.

    Returns:
        ``(B,)``, in squared intensity units (plus ``kappa`` times squared feature units).

    Raises:
        TypeError: a non-tensor input; a ``kappa`` that is not a number.
        ValueError: shapes that differ or lack a batch axis; batch sizes that differ; a negative ``kappa``.

    >>> izi_f_score(torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0]]),
    ...             torch.tensor([[0.0]]), kappa=0.5)
    tensor([4.])
    """
    _check_pair("image", image, recon, "recon")
    _check_pair("image_features", image_features, recon_features, "recon_features")
    if len(image) != len(image_features):
        raise ValueError(f"`image` and `image_features` must have one batch size, got {len(image)} and "
                         f"{len(image_features)}")
    kappa = check_real("kappa", kappa, "a non-negative number", lambda v: v >= 0)
    residual = (image - recon).flatten(1).square().mean(1)
    features = (image_features - recon_features).flatten(1).square().mean(1)
    return residual + kappa * features


def izi_f_loss(image: torch.Tensor, recon: torch.Tensor, image_features: torch.Tensor,
               recon_features: torch.Tensor, *, kappa: float = IZI_F_KAPPA) -> torch.Tensor:
    """The encoder's ``izi_f`` loss: :func:`izi_f_score` averaged over the batch (Schlegl et al. 2019).

    Gradients reach whatever produced ``recon`` and ``recon_features`` (the encoder, through the fixed
    generator and critic); ``image_features`` is a target and may be computed without them.

    Args:
        image, recon, image_features, recon_features, kappa: as :func:`izi_f_score`.

    Returns:
        A scalar tensor.

    Raises:
        TypeError, ValueError: as :func:`izi_f_score`.
    """
    return izi_f_score(image, recon, image_features, recon_features, kappa=kappa).mean()
