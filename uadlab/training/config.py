"""The configuration of a reconstruction run (Bengs et al. 2021, Sec. 2.3): :class:`TrainConfig`.

Everything that defines one run of ``uadlab train``, checked when built and saved as ``config.yaml``
in the run folder (and inside its checkpoint, so that a resume is checked even without the YAML):
the experiment (model and erasing, Table 1), the profile (schedule, backbone), the data, the
training-set fraction, the seed, the loss, the optimiser's learning rate, the device and precision.
:func:`resume_differences` lists what a resume may not change.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from uadlab._checks import check_int, check_real
from uadlab.data.io import atomic_write
from uadlab.errors import RunError
from uadlab.models.precision import PRECISIONS
from uadlab.models.registry import get_spec
from uadlab.profiles import Profile, get_profile
from uadlab.training.devices import default_precision, resolve_device
from uadlab.training.experiments import parse_experiment

__all__ = ["TrainConfig", "HISTORY_COLUMNS", "resume_differences"]

#: Columns of ``history.csv`` of a reconstruction run and of :attr:`uadlab.training.TrainResult.history`.
HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "train_l1_per_voxel", "train_kl", "val_l1_per_voxel",
                                    "val_kl", "seconds")

_LOSSES = ("elbo", "lambert")  # uadlab.models.vae.LOSSES; "elbo" is also every other model's own objective
# Fields that may differ on resume: the device and compilation only decide where and how the same
# computation runs.
_RESUME_FREE_FIELDS = ("device", "compile")
#: Fields that fall back to the run's profile when ``None`` (see :meth:`TrainConfig.resolved`).
_PROFILE_FIELDS = ("batch_size", "max_epochs", "patience")


@dataclass
class TrainConfig:
    """Everything that defines one training run; saved as ``config.yaml`` in the run folder.

    Attributes:
        experiment: experiment name (:mod:`uadlab.training.experiments`): a Table 1 name such as
            ``"3D-Cube-n"`` (the dense VAE) or ``"MODEL:NAME"`` such as ``"spatial-vae:2D-None"``;
            stored in its canonical spelling.
        profile: profile name (``smoke``, ``lab``, ``paper``) or a :class:`~uadlab.profiles.Profile`
            (stored in full in ``config.yaml``); gives the schedule and the VAEs' backbone and latent size.
        data: folder built by ``uadlab data build``.
        fraction: share of the healthy training split, in (0, 1] (data-set-size study, Fig. 5).
        seed: seed of the subset, initial weights, shuffling, erasing and latent sampling.
        loss: ``"elbo"`` (Sec. 2.3; for a model without a latent, its own objective) or ``"lambert"``
            (Lambert et al.'s collapse-robust loss, VAE models only).
        lr: Adam learning rate (paper: 1e-3).
        batch_size: samples per batch (volumes in 3D, slices in 2D); ``None``: the profile's
            (:meth:`~uadlab.profiles.Profile.batch_size_for`).
        max_epochs: epoch limit; ``None``: the profile's.
        patience: epochs without validation improvement before stopping; ``None``: the profile's.
            The run folder's ``config.yaml`` records the values these three resolved to, and a
            resume is refused when they (or the profile's backbone) no longer match.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``: CUDA when available, else CPU.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:data:`uadlab.models.precision.PRECISIONS`):
            autocast around the forward pass and loss of training, validation and inference (float16
            with loss scaling); ``None``: the profile's, else :func:`default_precision` for the
            device. ``config.yaml`` records the value used; a resume keeps the run's precision when
            none is given and refuses a different one. A ``config.yaml`` written before this field
            existed reads as ``"32"``.
        compile: run the model through ``torch.compile`` (same results up to float rounding; pays only
            where its compile time is won back, see the README). May change on resume.

    Raises:
        TypeError: a field of the wrong type.
        ValueError: a field with an invalid value (unknown experiment, profile or loss, fraction
            outside (0, 1], non-positive lr, batch size, epochs or patience, seed outside
            [0, 2**32), unknown precision).

    NumPy numbers are converted to ``int``/``float`` so that the config can be written as YAML.
    """

    experiment: str
    profile: str | Profile
    data: str
    fraction: float = 1.0
    seed: int = 0
    loss: str = "elbo"
    lr: float = 1e-3
    batch_size: int | None = None
    max_epochs: int | None = None
    patience: int | None = None
    device: str | None = None
    precision: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str):
            raise TypeError(f"`experiment` must be a str, got {self.experiment!r}")
        try:
            self.experiment = parse_experiment(self.experiment).name
        except ValueError as error:
            raise ValueError(f"`experiment` must be a Table 1 name such as '3D-Cube-n' or '2D-None', "
                             f"optionally 'MODEL:' in front, got {self.experiment!r} ({error})") from None
        if isinstance(self.data, os.PathLike):
            self.data = os.fspath(self.data)
        if not isinstance(self.data, str):
            raise TypeError(f"`data` must be a path, got {self.data!r}")
        if not isinstance(self.profile, (str, Profile)):
            raise TypeError(f"`profile` must be a profile name or a Profile, got {self.profile!r}")
        get_profile(self.profile)  # ValueError for an unknown name
        check_real("fraction", self.fraction, "a number", lambda v: True)
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1], got {self.fraction!r}")
        check_int("seed", self.seed, "an int")
        if not 0 <= self.seed < 2**32:  # the range seed_everything accepts
            raise ValueError(f"`seed` must be a non-negative int below 2**32, got {self.seed!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"`loss` must be one of {list(_LOSSES)}, got {self.loss!r}")
        if self.loss != "elbo" and "loss" not in {f.name for f in fields(get_spec(self.model).config_cls)}:
            raise ValueError(f"`loss` {self.loss!r} applies to the VAE models only, got model {self.model!r}")
        check_real("lr", self.lr, "a number", lambda v: True)
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr!r}")
        for name in _PROFILE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, "an int")
                if value < 1:
                    raise ValueError(f"`{name}` must be a positive int or None, got {value!r}")
                setattr(self, name, int(value))
        self.fraction, self.seed, self.lr = float(self.fraction), int(self.seed), float(self.lr)
        if self.device is not None:
            resolve_device(self.device)
        if self.precision == 32 and not isinstance(self.precision, bool):  # YAML or Python int 32
            self.precision = "32"
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {list(PRECISIONS)} or None, got {self.precision!r}")
        if not isinstance(self.compile, (bool, np.bool_)):
            raise TypeError(f"`compile` must be a bool, got {self.compile!r}")
        self.compile = bool(self.compile)
        if self.compile and get_spec(self.model).model_cls.fitted_in_closed_form:
            raise ValueError(f"`compile` (--compile) has nothing to compile: {self.model} is fitted in closed form, "
                             "without training steps")

    def resolved_precision(self, device: str | torch.device | None = None) -> str:
        """``precision``, else the profile's, else :func:`default_precision` of ``device`` (``None``:
        this config's device).
        """
        if self.precision is not None:
            return self.precision
        if self.resolved_profile.precision is not None:
            return self.resolved_profile.precision
        return default_precision(resolve_device(self.device if device is None else device))

    @property
    def model(self) -> str:
        """Registry name of the run's model (from the experiment name)."""
        return parse_experiment(self.experiment).model

    @property
    def resolved_profile(self) -> Profile:
        """The :class:`~uadlab.profiles.Profile` this run uses."""
        return get_profile(self.profile)

    def resolved(self, name: str) -> int:
        """``batch_size``, ``max_epochs`` or ``patience``, falling back to the profile's value (for
        ``batch_size``, the profile's for this experiment's 2D or 3D model; for ``max_epochs``, the
        profile's for this model, :meth:`~uadlab.profiles.Profile.max_epochs_for`).
        """
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "batch_size":
            return self.resolved_profile.batch_size_for(parse_experiment(self.experiment).spatial_dims)
        if name == "max_epochs":
            return self.resolved_profile.max_epochs_for(self.model)
        return getattr(self.resolved_profile, name)

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML representation (a custom profile becomes a mapping)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.profile, Profile):
            out["profile"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.profile).items()}
        return out

    def to_yaml(self, path: str | Path, *, model: dict | None = None) -> Path:
        """Write the config to ``path`` (atomically) and return the path.

        Args:
            path: the file.
            model: the run's model record (:func:`uadlab.models.registry.model_record`), written under
                ``model`` for the reader; :meth:`from_yaml` skips it (the checkpoint's copy is used).
        """
        path = Path(path)
        text = yaml.safe_dump({**self.to_dict(), **({"model": model} if model else {})}, sort_keys=False)
        with atomic_write(path, overwrite=True) as tmp:
            Path(tmp).write_text(text)
        return path

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a config written by :meth:`to_yaml`.

        Raises:
            RunError: the file is missing, not YAML, or has unknown/missing/invalid fields.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RunError(f"{path}: cannot read the run config ({error})") from None
        return cls._from_dict(raw, path)

    @classmethod
    def _from_dict(cls, raw: Any, path: str | Path) -> TrainConfig:
        """A config from :meth:`to_dict`'s mapping; RunError naming ``path`` when it is not one."""
        if not isinstance(raw, dict):
            raise RunError(f"{path}: the run config must be a mapping, got {type(raw).__name__}")
        raw = dict(raw)
        raw.pop("model", None)  # the model record train() writes beside the config; the checkpoint has it too
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RunError(f"{path}: unknown config field(s) {unknown}")
        # Runs from before these fields existed trained in float32, eagerly.
        raw.setdefault("precision", "32")
        raw.setdefault("compile", False)
        if isinstance(raw.get("profile"), dict):
            try:
                raw["profile"] = Profile(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in raw["profile"].items()})
            except TypeError as error:
                raise RunError(f"{path}: invalid profile ({error})") from None
        try:
            return cls(**raw)
        except (TypeError, ValueError) as error:
            raise RunError(f"{path}: invalid run config ({error})") from None


def resume_differences(stored: TrainConfig, given: TrainConfig) -> list[str]:
    """Every field (except the device and compilation) where ``stored`` and ``given`` differ, as
    ``"name (stored X, given Y)"``; a ``precision`` of ``None`` in ``given`` means the run's own.

    ``batch_size``, ``max_epochs`` and ``patience`` are compared as resolved, so that a run started
    with the profile's values resumes under the same command, and refuses to when the profile changed.
    ``profile`` is compared as the :class:`~uadlab.profiles.Profile` it names: a named profile and an
    identical ``Profile`` object (what the labs pass) are the same run. ``data`` is compared as the folder
    it names, symbolic links followed: a lab reading a course pack (:mod:`uadlab.course`) names the pack's
    data set through a link in its own output folder.
    """
    def value(config: TrainConfig, name: str) -> Any:
        if name == "profile":
            return config.resolved_profile
        if name == "data":
            return os.path.realpath(config.data)
        return config.resolved(name) if name in _PROFILE_FIELDS else getattr(config, name)

    free = _RESUME_FREE_FIELDS + (("precision",) if given.precision is None else ())  # None: keep the run's
    return [f"{f.name} (stored {value(stored, f.name)!r}, given {value(given, f.name)!r})"
            for f in fields(TrainConfig)
            if f.name not in free and value(stored, f.name) != value(given, f.name)]
