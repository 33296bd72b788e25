"""Experiment names: Table 1 of Bengs et al. 2021 with a model axis.

A Table 1 name (``2D-None``, ``3D-Cube-n``, ``2D-Half-Slice-0``...) gives the input dimension, the
erasing method and the fill (Sec. 2.2, Fig. 3). On its own it means the paper's model, the dense VAE;
another registered model is named in front, ``MODEL:NAME``, e.g. ``spatial-vae:3D-None`` or
``mean-image:3D-None`` (``uadlab train --model spatial-vae --experiment 3D-None`` is the same run).

Each experiment has a ``family`` (``None``, ``Box``, ``Multi``, ``Half``: the same erasing idea in 2D
and 3D, e.g. Patch and Cube are the ``Box`` family) and a ``baseline`` (the ``None`` experiment of the
same model and dimension), so no caller rebuilds names from pieces.

>>> e = parse_experiment("spatial-vae:3d-cube-n")
>>> e.name, e.table1_name, e.model, e.family, e.baseline.name
('spatial-vae:3D-Cube-n', '3D-Cube-n', 'spatial-vae', 'Box', 'spatial-vae:3D-None')
>>> parse_experiment("2D-Patch-0").name
'2D-Patch-0'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from uadlab.models.registry import DEFAULT_MODEL, MODELS, get_spec
from uadlab.training.erasing import FILLS, METHODS, SpatialErasing

__all__ = ["EXPERIMENTS", "FAMILIES", "Experiment", "parse_experiment", "experiment_name"]

#: The 14 experiment names in the order of Table 1 (the dense VAE).
EXPERIMENTS: tuple[str, ...] = (
    "2D-None", "3D-None",
    "2D-Patch-0", "2D-Patch-n", "3D-Cube-0", "3D-Cube-n",
    "2D-Multi-Patch-0", "2D-Multi-Patch-n", "3D-Multi-Cube-0", "3D-Multi-Cube-n",
    "2D-Half-Slice-0", "2D-Half-Slice-n", "3D-Half-Volume-0", "3D-Half-Volume-n",
)
#: Erasing families, the same idea in 2D and 3D: ``METHODS[d][i]`` belongs to ``FAMILIES[i + 1]``.
FAMILIES: tuple[str, ...] = ("None", "Box", "Multi", "Half")
_SEPARATOR = ":"


@dataclass(frozen=True)
class Experiment:
    """One experiment: model, input dimension, erasing method and fill.

    Attributes:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        method: ``"None"`` or one of :data:`~uadlab.training.erasing.METHODS` ``[spatial_dims]``.
        fill: ``"0"`` or ``"n"``; ``None`` exactly when ``method == "None"``.
        model: registry name of the model (:data:`~uadlab.models.registry.MODELS`).

    Raises:
        ValueError: an unknown dimension, method, fill or model; a method of the other dimension
            (``Patch`` is 2D only, ``Cube`` 3D only); a fill given with ``"None"`` or missing without it;
            a dimension the model does not support, erasing with a model that takes none, or no erasing
            with a model that requires it (``cevae``).
    """

    spatial_dims: int
    method: str
    fill: str | None
    model: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or isinstance(self.spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {self.spatial_dims!r}")
        methods = ("None", *METHODS[self.spatial_dims])
        if self.method not in methods:
            raise ValueError(f"`method` must be one of {methods} for {self.spatial_dims}D, got {self.method!r}")
        expected = (None,) if self.method == "None" else FILLS
        if self.fill not in expected:
            raise ValueError(f"`fill` must be one of {expected} for method {self.method!r}, got {self.fill!r}")
        spec = get_spec(self.model)
        object.__setattr__(self, "model", spec.name)
        if self.spatial_dims not in spec.spatial_dims:
            raise ValueError(f"model {spec.name!r} supports {', '.join(f'{d}D' for d in spec.spatial_dims)} only, "
                             f"got {self.spatial_dims}D")
        if self.method != "None" and not spec.erasing:
            raise ValueError(f"model {spec.name!r} takes no spatial erasing, got method {self.method!r}")
        if self.method == "None" and spec.requires_erasing:
            raise ValueError(f"model {spec.name!r} learns from erased inputs: name an erasing method, e.g. "
                             f"{spec.name}:{self.spatial_dims}D-{METHODS[self.spatial_dims][0]}-n")

    @property
    def table1_name(self) -> str:
        """The Table 1 part of the name, e.g. ``"3D-Cube-n"``."""
        suffix = "" if self.fill is None else f"-{self.fill}"
        return f"{self.spatial_dims}D-{self.method}{suffix}"

    @property
    def name(self) -> str:
        """The canonical name: the Table 1 name, with ``MODEL:`` in front unless the model is the dense VAE."""
        return self.table1_name if self.model == DEFAULT_MODEL else f"{self.model}{_SEPARATOR}{self.table1_name}"

    @property
    def family(self) -> str:
        """``"None"``, ``"Box"`` (Patch/Cube), ``"Multi"`` or ``"Half"`` (:data:`FAMILIES`)."""
        return "None" if self.method == "None" else FAMILIES[1 + METHODS[self.spatial_dims].index(self.method)]

    @property
    def baseline(self) -> Experiment:
        """The ``None`` experiment of the same model and dimension (itself for a ``None`` experiment)."""
        return replace(self, method="None", fill=None)

    def erasing(self, p: float = 0.5) -> SpatialErasing | None:
        """The input transform of this experiment; ``None`` for ``"None"`` (no erasing).

        Args:
            p: probability of erasing a sample (Sec. 2.2: 0.5).
        """
        if self.method == "None":
            return None
        return SpatialErasing(self.spatial_dims, self.method, self.fill, p=p)


def experiment_name(spatial_dims: int, family: str, fill: str | None = None, *, model: str = DEFAULT_MODEL) -> str:
    """The canonical name of a family's experiment, e.g. ``experiment_name(3, "Box", "n") == "3D-Cube-n"``.

    Raises:
        ValueError: an unknown family, or as :class:`Experiment`.
    """
    if family not in FAMILIES:
        raise ValueError(f"`family` must be one of {FAMILIES}, got {family!r}")
    method = "None" if family == "None" else METHODS[spatial_dims][FAMILIES.index(family) - 1]
    return Experiment(spatial_dims, method, fill, model).name


def parse_experiment(name: str, *, model: str | None = None) -> Experiment:
    """The :class:`Experiment` called ``name``: a Table 1 name, optionally ``MODEL:`` in front.

    Case and surrounding blanks are ignored (the paper's text writes ``3D-cube-n``); the result's
    ``.name`` is canonical.

    Args:
        name: e.g. ``"3D-Cube-n"``, ``"spatial-vae:2D-None"``.
        model: the model, when not in ``name`` (``uadlab train --model``); given in both places, they
            must agree.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: not a Table 1 name (the message lists them), an unknown model, a model given twice
            differently, or a combination the model does not support.
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {name!r}")
    if model is not None and not str(model).strip():
        raise ValueError(f"`model` must name a registered model ({', '.join(MODELS)}) or be None, got {model!r}")
    prefix, _, table1 = name.strip().rpartition(_SEPARATOR)
    if prefix and model is not None and get_spec(prefix).name != get_spec(model).name:
        raise ValueError(f"`name` {name!r} names model {prefix!r}, but `model` is {model!r}")
    canonical = {known.lower(): known for known in EXPERIMENTS}.get(table1.strip().lower())
    if canonical is None:
        raise ValueError(f"`name` must be one of {', '.join(EXPERIMENTS)}, optionally with 'MODEL:' in front, "
                         f"got {name!r}")
    dims, _, rest = canonical.partition("D-")
    method, fill = (rest, None) if rest == "None" else (rest[:-2], rest[-1])
    return Experiment(int(dims), method, fill, prefix.strip() or model or DEFAULT_MODEL)
