"""Run profiles: one place for every size, count and schedule that differs between a CI smoke run,
a course lab on a laptop CPU and the paper's full settings.

A profile is data, not scattered constants: training, data building and the main job all take a
profile name and read their settings from the :class:`Profile` it names.

- ``smoke``: 32³ volumes, a handful of subjects, a tiny backbone and a short schedule with early
  stopping, for CI, tests and the notebooks' headless runs. Numbers from it are not meaningful.
- ``lab``: 64³ volumes (the paper's size), the default phantom counts, a lighter backbone and a short
  schedule — 3 to 7 minutes per model on a 2-core CPU, 1 h 42 min for the whole main job
  (``uadlab reproduce --profile lab``, measured 2026-11-28; README, "Speed").
- ``paper``: Bengs et al. 2021 settings (Sec. 2.1–2.3): 1 mm resampling, 64³, batch 32, latent
  128 (2D) / 512 (3D), a long schedule with early stopping; meant for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Profile", "PROFILES", "DEFAULT_PHANTOM_COUNTS", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Settings of one run profile.

    Attributes:
        name: ``"smoke"``, ``"lab"`` or ``"paper"``.
        image_size: edge of the preprocessed cubic volume in voxels (paper: 64).
        spacing_mm: isotropic voxel size (mm) of the resampling step of the preprocessing
            (paper: 1.0). The phantom is simulated directly on this grid. Coarser values only
            change the intermediate grid: the final volume is always ``image_size`` voxels across
            the same 158 × 191 × 163 mm box (left-right × posterior-anterior × inferior-superior).
        phantom_counts: number of simulated subjects per cohort (``healthy``, ``tumour``,
            ``stroke``) when the phantom is built with this profile.
        batch_size: training mini-batch size: axial slices for the 2D VAE, and volumes for the 3D
            VAE unless ``batch_size_3d`` is set (paper: 32 for both).
        batch_size_3d: mini-batch size of the 3D VAE when it differs from ``batch_size``. An epoch
            over ``N`` volumes makes ``N / batch`` optimiser steps in 3D but ``64 N / batch`` in 2D:
            at 32, the lab's 180 training volumes give the 3D VAE 6 Adam steps an epoch, too few for
            its 40 epochs to converge (healthy validation l1 0.062 at batch 32 after 27 epochs, 0.054
            at batch 8 after 7). ``lab`` uses 8; ``paper`` keeps the paper's 32.
        max_epochs: upper bound on training epochs.
        patience: stop when the healthy validation reconstruction error has not improved for this
            many epochs; the best epoch's weights are kept (Sec. 2.3).
        channels: encoder feature maps, one per stride-2 stage; the decoder mirrors them.
        latent_2d: latent size of the 2D VAE (paper: 128).
        latent_3d: latent size of the 3D VAE (paper: 512).
        fractions: training-set fractions of the data-set-size study (paper: 10/20/60/100 %).
        precision: numeric precision of training and inference, ``"32"``, ``"bf16-mixed"`` or
            ``"16-mixed"`` (:data:`uadlab.models.PRECISIONS`); ``None``: ``"bf16-mixed"`` on a CPU that
            runs bfloat16 natively (AVX512-BF16 or AMX), else ``"32"``, CUDA included (TF32
            convolutions were faster there: :func:`uadlab.training.default_precision`). ``smoke``
            keeps ``"32"`` so that its numbers stay comparable across machines and with earlier runs.
        epoch_limits: a lower epoch limit for some models, keyed by registry name (``"ddpm"``) or
            ``"segmenter"`` (Behrendt et al. 2024's); :meth:`max_epochs_for` takes the smaller of it and
            ``max_epochs``. ``lab`` gives each diffusion family, f-AnoGAN and the segmenter the epochs
            that fit about 10 minutes on 2 CPU cores (issue 26; measured in ``docs/models.md``): at the
            VAEs' channels a lab DDPM epoch costs 24x a dense VAE's.
        diffusion_channels: feature maps of the diffusion families' U-Nets (``ddpm``, ``anoddpm``,
            ``pddpm``, ``cddpm``); ``None``: ``channels``. ``lab`` halves them: 73 s per 2D epoch on 2
            cores against 139 s.
        synthetic_copies: anomalous copies of each healthy volume in the segmenter's synthetic pools
            (:class:`uadlab.training.SegmenterConfig`); ``lab`` 2, which with its 180 training volumes
            gives 360 anomalous ones an epoch.
    """

    name: str
    image_size: int
    spacing_mm: float
    phantom_counts: dict[str, int] = field(default_factory=dict)
    batch_size: int = 32
    batch_size_3d: int | None = None
    max_epochs: int = 100
    patience: int = 10
    channels: tuple[int, ...] = (32, 64, 128, 256)
    latent_2d: int = 128
    latent_3d: int = 512
    fractions: tuple[float, ...] = (0.1, 0.2, 0.6, 1.0)
    precision: str | None = None
    epoch_limits: dict[str, int] = field(default_factory=dict)
    diffusion_channels: tuple[int, ...] | None = None
    synthetic_copies: int = 4

    def max_epochs_for(self, model: str) -> int:
        """Epoch limit of ``model`` (a registry name or ``"segmenter"``) under this profile.

        >>> get_profile("lab").max_epochs_for("dense-vae"), get_profile("lab").max_epochs_for("ddpm")
        (40, 6)
        """
        return min(self.max_epochs, self.epoch_limits.get(model, self.max_epochs))

    def latent_dim(self, spatial_dims: int) -> int:
        """Latent size for a 2D or 3D VAE under this profile.

        Raises:
            ValueError: ``spatial_dims`` is not 2 or 3.
        """
        return self.latent_2d if _checked_dims(spatial_dims) == 2 else self.latent_3d

    def batch_size_for(self, spatial_dims: int) -> int:
        """Mini-batch size (slices or volumes) of a 2D or 3D VAE under this profile.

        Raises:
            ValueError: ``spatial_dims`` is not 2 or 3.
        """
        if _checked_dims(spatial_dims) == 3 and self.batch_size_3d is not None:
            return self.batch_size_3d
        return self.batch_size


def _checked_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


#: Phantom subjects per cohort of the lab and paper profiles (and of a phantom manifest without counts).
DEFAULT_PHANTOM_COUNTS: dict[str, int] = {"healthy": 200, "tumour": 60, "stroke": 60}

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        image_size=32,
        spacing_mm=4.0,
        phantom_counts={"healthy": 20, "tumour": 6, "stroke": 6},
        batch_size=8,
        max_epochs=20,
        patience=5,
        channels=(8, 16, 32),
        latent_2d=32,
        latent_3d=64,
        fractions=(0.5, 1.0),
        precision="32",
    ),
    "lab": Profile(
        name="lab",
        image_size=64,
        spacing_mm=2.0,
        phantom_counts=dict(DEFAULT_PHANTOM_COUNTS),
        batch_size=32,
        batch_size_3d=8,
        max_epochs=40,
        patience=8,
        channels=(16, 32, 64, 128),
        epoch_limits={"ddpm": 6, "anoddpm": 6, "pddpm": 5, "cddpm": 6, "fanogan": 30, "segmenter": 10},
        diffusion_channels=(8, 16, 32, 64),
        synthetic_copies=2,
    ),
    "paper": Profile(
        name="paper",
        image_size=64,
        spacing_mm=1.0,
        phantom_counts=dict(DEFAULT_PHANTOM_COUNTS),
        batch_size=32,
        max_epochs=300,
        patience=30,
        channels=(32, 64, 128, 256),
    ),
}


def get_profile(name: str | Profile) -> Profile:
    """Return the profile called ``name`` (a :class:`Profile` is passed through).

    Raises:
        ValueError: ``name`` is not one of ``smoke``, ``lab``, ``paper``.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"`profile` must be one of {sorted(PROFILES)}, got {name!r}") from None
