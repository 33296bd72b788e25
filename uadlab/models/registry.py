"""Find a model by name, build it from its config, and rebuild it from a saved run.

Every model file registers itself with one call to :func:`register` (its name, class and config
dataclass, the spatial dimensions it supports and whether spatial erasing applies to it). A run
saves ``{"name": ..., "config": {...}}`` (:func:`model_record`) in its ``config.yaml`` and
checkpoint, so :func:`build_from_record` rebuilds any model without knowing its class in advance.

A config dataclass takes ``spatial_dims`` and ``image_size`` and the model's own hyper-parameters
(channels, latent size, bottleneck...). Its classmethod ``from_profile(profile, spatial_dims,
image_size, **options)`` gives the profile's choice, so that a profile can override a model's
defaults (the VAEs read ``Profile.channels`` and ``Profile.latent_dim``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

__all__ = ["ModelSpec", "MODELS", "DEFAULT_MODEL", "register", "get_spec", "model_config", "build_model",
           "model_record", "build_from_record"]

#: The model a bare Table 1 name (``3D-Cube-n``) means: Bengs et al.'s dense VAE.
DEFAULT_MODEL = "dense-vae"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: registry name, e.g. ``"spatial-vae"`` (lower case, no ``:``).
        model_cls: the ``nn.Module`` class, built as ``model_cls(**asdict(config))``.
        config_cls: its config dataclass (with ``from_profile``).
        spatial_dims: the input dimensions it supports, ``(2, 3)`` or one of them.
        erasing: whether spatial erasing (Sec. 2.2) applies; ``False``: only ``*-None`` experiments.
        requires_erasing: the model learns from erased inputs (the ceVAE's in-painting): its
            experiments must name an erasing method.
        description: one line for listings.
    """

    name: str
    model_cls: type[nn.Module]
    config_cls: type
    spatial_dims: tuple[int, ...] = (2, 3)
    erasing: bool = True
    requires_erasing: bool = False
    description: str = ""


#: Registry name -> :class:`ModelSpec`; filled by the model modules when :mod:`uadlab.models` is imported.
MODELS: dict[str, ModelSpec] = {}


def register(name: str, model_cls: type[nn.Module], config_cls: type, *, spatial_dims: tuple[int, ...] = (2, 3),
             erasing: bool = True, requires_erasing: bool = False, description: str = "") -> ModelSpec:
    """Add a model to :data:`MODELS` (one call per model file).

    Raises:
        ValueError: the name is taken, empty, contains ``:`` or upper case; erasing required but not allowed.
    """
    if not name or ":" in name or name != name.lower() or name in MODELS:
        raise ValueError(f"`name` must be a new lower-case model name without ':', got {name!r}")
    if requires_erasing and not erasing:
        raise ValueError(f"model {name!r} cannot require erasing and refuse it")
    spec = ModelSpec(name, model_cls, config_cls, tuple(spatial_dims), erasing, requires_erasing, description)
    MODELS[name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no model of that name; the message lists the registered ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"`model` must be a model name, got {name!r}")
    try:
        return MODELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"`model` must be one of {sorted(MODELS)}, got {name!r}") from None


def model_config(name: str, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> Any:
    """The config of model ``name`` as ``profile`` sets it for ``spatial_dims`` and ``image_size``.

    Args:
        name: registry name.
        profile: a :class:`~uadlab.profiles.Profile`.
        spatial_dims: 2 or 3.
        image_size: edge of the cubic volumes, voxels.
        **options: config fields to set (e.g. ``loss="lambert"`` for the VAEs).

    Raises:
        ValueError: an unknown model, a dimension it does not support, or an option the model does not
            have (e.g. ``loss`` for ``mean-image``).
    """
    spec = get_spec(name)
    known = {f.name for f in fields(spec.config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"model {spec.name!r} has no option(s) {unknown} (its config: {sorted(known)})")
    if spatial_dims not in spec.spatial_dims:
        raise ValueError(f"`spatial_dims` must be one of {spec.spatial_dims} for model {spec.name!r}, "
                         f"got {spatial_dims!r}")
    return spec.config_cls.from_profile(profile, spatial_dims, image_size, **options)


def build_model(name: str, config: Any) -> nn.Module:
    """Model ``name`` built from its config dataclass (untrained weights, drawn from torch's global RNG).

    Raises:
        ValueError: an unknown model, or a config of another model's class; the model's own checks.
    """
    spec = get_spec(name)
    if not isinstance(config, spec.config_cls):
        raise ValueError(f"`config` must be a {spec.config_cls.__name__} for model {spec.name!r}, "
                         f"got {type(config).__name__}")
    return spec.model_cls(**asdict(config))


def model_record(name: str, config: Any) -> dict[str, Any]:
    """``{"name": registry name, "config": plain dict}``, for ``config.yaml`` and checkpoints."""
    spec = get_spec(name)
    return {"name": spec.name, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}}


def build_from_record(record: dict[str, Any]) -> nn.Module:
    """Rebuild a model (untrained weights) from :func:`model_record`'s output.

    Raises:
        ValueError: an unknown model name, or a config field the model does not have.
    """
    spec = get_spec(record["name"])
    known = {f.name for f in fields(spec.config_cls)}
    unknown = sorted(set(record["config"]) - known)
    if unknown:
        raise ValueError(f"`record` has config field(s) {unknown} that model {spec.name!r} does not know")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()}
    return build_model(spec.name, spec.config_cls(**config))
