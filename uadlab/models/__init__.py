"""Reconstruction models behind one seam: a registry by name, one model per file.

- :mod:`~uadlab.models.base`: the :class:`ReconstructionModel` protocol every model follows (training
  loss, validation terms, ``reconstruct``), the 2D slice / 3D volume sample layout, and
  :func:`reconstruct` / :func:`reconstruct_and_score` for whole volumes (the anomaly score is the
  residual unless a family overrides ``anomaly_score``).
- :mod:`~uadlab.models.precision`: float32 or mixed precision (autocast) for every forward pass.
- :mod:`~uadlab.models.registry`: find a model by name, build it from its config dataclass, rebuild it
  from a run's record.
- :mod:`~uadlab.models.vae`: what the VAEs share (layers, Gaussian latent, ELBO, Lambert et al.'s loss).
- ``dense-vae`` (:mod:`~uadlab.models.dense_vae`, Bengs et al. 2021), ``spatial-vae``
  (:mod:`~uadlab.models.spatial_vae`, Lambert et al. 2021), ``ae-dense`` and ``ae-spatial``
  (:mod:`~uadlab.models.ae`, Baur et al. 2021), ``cevae`` (:mod:`~uadlab.models.cevae`, Zimmerer et
  al. 2019), ``dae`` (:mod:`~uadlab.models.dae`, Kascenas et al. 2022), ``ddpm``
  (:mod:`~uadlab.models.ddpm`, a diffusion model reconstructing from partially noised inputs, Behrendt
  et al. 2024), ``anoddpm`` (:mod:`~uadlab.models.anoddpm`, the same with simplex noise and partial
  diffusion, Wyatt et al. 2022), ``pddpm`` (:mod:`~uadlab.models.pddpm`, one patch noised at a time,
  Behrendt et al. 2023), ``cddpm`` (:mod:`~uadlab.models.cddpm`, conditioned on a learned latent of
  its input, Behrendt et al. 2024/2025), ``fanogan`` (:mod:`~uadlab.models.fanogan`, a WGAN-GP with an izi_f encoder,
  Schlegl et al. 2019), and two no-learning floors, ``mean-image`` (:mod:`~uadlab.models.mean_image`) and
  ``zscore`` (:mod:`~uadlab.models.zscore`). ``docs/models.md`` is their model card table.

Adding a model: one file here that subclasses :class:`~uadlab.models.base.ModelBase` and calls
:func:`~uadlab.models.registry.register`, one import line below, and its tests.
"""

from uadlab.models import (  # noqa: F401  (each registers its model)
    ae,
    anoddpm,
    cddpm,
    cevae,
    dae,
    ddpm,
    dense_vae,
    fanogan,
    mean_image,
    pddpm,
    spatial_vae,
    zscore,
)
from uadlab.models.ae import DenseAE, DenseAEConfig, SpatialAE, SpatialAEConfig
from uadlab.models.anoddpm import AnoDDPM, AnoDDPMConfig
from uadlab.models.base import (
    LossTerms,
    ModelBase,
    ReconstructionModel,
    reconstruct,
    reconstruct_and_score,
    samples_to_volumes,
    volumes_to_samples,
)
from uadlab.models.cddpm import CDDPM, CDDPMConfig
from uadlab.models.cevae import CeVAE, CeVAEConfig
from uadlab.models.dae import DAE, DAEConfig
from uadlab.models.ddpm import DDPM, DDPMConfig
from uadlab.models.dense_vae import DenseVAE, DenseVAEConfig
from uadlab.models.fanogan import FAnoGAN, FAnoGANConfig
from uadlab.models.mean_image import MeanImage, MeanImageConfig
from uadlab.models.pddpm import PDDPM, PDDPMConfig
from uadlab.models.precision import PRECISIONS, autocast, bf16_supported
from uadlab.models.registry import (
    DEFAULT_MODEL,
    MODELS,
    build_from_record,
    build_model,
    get_spec,
    model_config,
    model_record,
)
from uadlab.models.spatial_vae import SpatialVAE, SpatialVAEConfig
from uadlab.models.vae import LambertLoss, VAEOutput, elbo_loss, kl_divergence
from uadlab.models.zscore import ZScore, ZScoreConfig

__all__ = ["ReconstructionModel", "ModelBase", "LossTerms", "reconstruct", "reconstruct_and_score",
           "volumes_to_samples", "samples_to_volumes", "MODELS", "DEFAULT_MODEL", "get_spec", "model_config",
           "build_model", "model_record", "build_from_record", "DenseVAE", "DenseVAEConfig", "SpatialVAE",
           "SpatialVAEConfig", "MeanImage", "MeanImageConfig", "DDPM", "DDPMConfig", "AnoDDPM", "AnoDDPMConfig",
           "PDDPM", "PDDPMConfig", "CDDPM", "CDDPMConfig", "DenseAE", "DenseAEConfig", "SpatialAE",
           "SpatialAEConfig", "CeVAE", "CeVAEConfig",
           "DAE", "DAEConfig", "FAnoGAN", "FAnoGANConfig", "ZScore", "ZScoreConfig",
           "VAEOutput", "elbo_loss", "LambertLoss", "kl_divergence", "PRECISIONS", "autocast", "bf16_supported"]
