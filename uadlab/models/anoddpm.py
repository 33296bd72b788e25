"""AnoDDPM (Wyatt et al., CVPR-W 2022): a DDPM with simplex noise and partial diffusion, registry name ``anoddpm``.

Wyatt, Leach, Schmon and Willcocks, "AnoDDPM: Anomaly Detection with Denoising Diffusion
Probabilistic Models using Simplex Noise" (CVPR Workshops 2022), noise the input only part of the
way (partial diffusion) and replace the DDPM's Gaussian noise by multi-octave *simplex* noise: a
smooth, band-limited random field whose blobs are the size of a lesion, so that the model learns to
remove lesion-sized deviations, where white noise only teaches it to remove grain. This module holds
the noise (first part) and the model, :class:`AnoDDPM` (last section).

The noise (:func:`simplex_noise`; deterministic given integer seeds: :func:`simplex_octaves`) is 3D
OpenSimplex noise (Kurt Spencer's 2014 algorithm, from the ``opensimplex`` library that the reference
code forks) summed over octaves: octave ``k`` is evaluated at the voxel coordinates times
``frequency * 2**k`` (lattice units; the blobs are about ``1 / frequency`` voxels across) with
amplitude ``persistence**k``. The defaults are the reference's ``octave=6, persistence=0.8,
frequency=64`` (``GaussianDiffusion.generate_simplex_noise``), whose ``frequency`` is a wavelength
in voxels: :data:`SIMPLEX_FREQUENCY` is its inverse, ``2**-6``. The reference works on 256 x 256
slices, where 64 voxels are a quarter of the image; :class:`AnoDDPM` scales it to its image size
(:func:`simplex_settings`). Each octave is OpenSimplex's raw sum divided by 103, as the
reference's ``_noise3``, and the octave sum is **not** rescaled: its standard deviation is about 0.5
at the defaults (0.31 per octave), not 1, as in the reference.

Reference facts (Julian-Wyatt/AnoDDPM at commit 3052f04, read and run for the tests):

- ``simplex.py``: ``_init(seed)`` builds the 256-entry permutation with the ``opensimplex`` seeding
  (a 64-bit LCG, three warm-up steps, a backwards shuffle); ``_extrapolate3`` hashes a lattice vertex
  to one of 24 gradients (``perm[(perm[(perm[x & 255] + y) & 255] + z) & 255] % 24``); ``_noise3``
  sums ``(2 - |d|^2)^4 (g . d)`` over nearby vertices and divides by 103. This module computes the
  same function for the same integer seed, except that it sums over *every* vertex within reach:
  the reference's case analysis skips, at 4 % of points, a vertex whose kernel reaches the point
  by a little (the 2014 algorithm's known seams), which changes the value by at most ``7e-5`` per
  octave (by more than ``1e-6`` at 1 % of points). This field is continuous; the reference's is not
  quite.
- ``GaussianDiffusion.generate_simplex_noise``: for 2D images the reference evaluates the *3D*
  noise on the plane at depth ``t`` (the diffusion step, in voxels) with
  ``Simplex_CLASS.rand_3d_fixed_T_octaves`` (a comment says its 2D octaves "introduce directional
  artifacts"), draws a fresh seed at every call (``newSeed()``: an integer in ``[-1e10, 1e10)``)
  and repeats one field over the batch (its batch size is 1). Here each ``(sample, channel)`` gets
  its own seed drawn from a ``torch.Generator``, a 2D field is the plane at ``depth`` (a keyword,
  0 by default: the plane's statistics do not depend on it), and a 3D field is the volume of
  ``Simplex_CLASS.rand_3d_octaves``.
- Axes: the reference's array ``[z, y, x]`` holds the noise at ``(x, y, z)``; here ``W`` is ``x``,
  ``H`` is ``y`` and ``D`` (3D) is ``z``, so a seeded field is the reference's array.

Vectorised for CPUs: a point's lattice vertices within reach are among 12 offsets from its skewed
cell once the point is moved, by the cell's symmetries, to a canonical part of the cell
(:data:`_CANONICAL_OFFSETS`). The kernel weights of the (voxel, vertex) pairs form one sparse
matrix, shared by every seed of a batch; a product with each seed's vertex gradients gives its
field, so a batch costs little more than one field (a 64^3 volume takes about 0.4 s on one core).

The model (:class:`AnoDDPM`, a :class:`~uadlab.models.ddpm.DDPM` whose noise is simplex noise):

- Training (the reference's ``GaussianDiffusion.p_loss`` with ``noise_fn="simplex"``): a step ``t``
  uniform in ``[0, T)``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with ``eps`` simplex noise,
  the network predicts ``eps``, mean squared error.
- Reconstruction (partial diffusion): the input is noised with simplex noise to ``t_lambda`` (Wyatt et
  al.: ``lambda = 250`` of 1000 for brain MRI) and denoised. The reference runs the ``lambda`` reverse
  steps; to stay within a laptop's budget this model takes the **one-step** ``x0`` estimate (Ho et
  al. 2020, eq. 15) as :class:`~uadlab.models.ddpm.DDPM` does, 250x cheaper and smoother than the
  chain's sample. Its noise comes from a generator seeded with the config's ``seed`` at every call,
  so it is deterministic and depends on the samples (and their batch layout) only.
- Noise scale (:func:`simplex_settings`): the reference's first-octave wavelength is 64 voxels on
  256 x 256 slices, a quarter of the edge, and its 6 octaves end at a wavelength of 2 voxels. On
  ``S``-voxel images the wavelength is ``S / 4`` (16 at 64 voxels: blobs the same fraction of the
  brain) and the octaves stop at 2 voxels (``log2(S / 4)``: 4 at 64, 2 at 16), since a finer octave
  is aliased to grain on this grid: this is the reference's field seen at the lower resolution.
- Unit variance: the octave sum is divided by its expected standard deviation
  (:data:`SIMPLEX_OCTAVE_SD` per octave, octaves independent), so the schedule's ``abar_t`` means the
  signal-to-noise ratio it means for Gaussian noise and ``t = 250`` here is comparable with the
  ``ddpm`` family's steps. The reference does not rescale (sd about 0.5), so its ``t = 250`` noises
  about half as strongly as its schedule says.

Settings: ``lab`` and ``smoke``: the profile's channels rounded up to multiples of 8 (as ``ddpm``),
``lambda = 250``, one step; ``paper``: the paper profile's channels (Wyatt et al. use a 128-channel
U-Net on 256^2 slices; this is the largest the 64-voxel grid takes at a lab's cost), ``lambda = 250``.

Shape:
    - :class:`AnoDDPM` input and reconstruction: ``(B, 1, S, S)`` or ``(B, 1, S, S, S)`` in [0, 1].
    - :func:`simplex_noise`: ``(B, C, H, W)`` or ``(B, C, D, H, W)``, float32.
    - :func:`simplex_octaves`: ``(len(seeds), *spatial_shape)``, float32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from uadlab._checks import check_int, check_real
from uadlab.models.ddpm import DDPM, DDPMConfig
from uadlab.models.registry import register

__all__ = ["AnoDDPM", "AnoDDPMConfig", "ANODDPM_LEVEL", "SIMPLEX_OCTAVE_SD", "simplex_settings", "SIMPLEX_OCTAVES",
           "SIMPLEX_PERSISTENCE", "SIMPLEX_FREQUENCY", "simplex_noise", "simplex_octaves",
           "simplex_permutation"]

# ---------------------------------------------------------------------------------------------------
# The reference's settings
# ---------------------------------------------------------------------------------------------------

#: Octaves summed (the reference's ``octave=6``).
SIMPLEX_OCTAVES = 6
#: Amplitude ratio of consecutive octaves (the reference's ``persistence=0.8``).
SIMPLEX_PERSISTENCE = 0.8
#: Frequency of the first, coarsest octave, lattice cells per voxel (the reference's ``frequency=64``
#: is its inverse, a wavelength in voxels); doubled at every octave.
SIMPLEX_FREQUENCY = 2.0**-6

# ---------------------------------------------------------------------------------------------------
# OpenSimplex in 3D (Spencer 2014): lattice, gradients, seeded permutation
# ---------------------------------------------------------------------------------------------------

_STRETCH = -1 / 6  # (1 / sqrt(3 + 1) - 1) / 3: a point's coordinates -> the skewed lattice's
_SQUISH = 1 / 3  # (sqrt(3 + 1) - 1) / 3: a lattice vertex -> its position
_NORMALISER = 103.0  # OpenSimplex's 3D scale (the reference's NORM_CONSTANT3)
_RADIUS2 = 2.0  # a vertex reaches the points within sqrt(2) of it: kernel (2 - |d|^2)^4
_LCG_MULTIPLIER, _LCG_INCREMENT = 6364136223846793005, 1442695040888963407  # Knuth's MMIX LCG


def _gradients() -> torch.Tensor:
    """OpenSimplex's 24 gradients, ``(24, 3)``: 11 on one axis, 4 on the others, all sign patterns.

    In the reference's order: eight sign patterns (``x`` negative first, then ``y``, then ``z``
    flipped by the pattern's bits 0, 1, 2), each giving the three axes the 11 in turn.
    """
    rows = []
    for pattern in range(8):
        signs = torch.tensor([1 if pattern & 1 else -1, -1 if pattern & 2 else 1, -1 if pattern & 4 else 1])
        for axis in range(3):
            magnitudes = torch.full((3,), 4)
            magnitudes[axis] = 11
            rows.append(signs * magnitudes)
    return torch.stack(rows).float()


_GRADIENTS = _gradients()

#: Lattice offsets, from the origin vertex of a point's skewed cell, of the vertices whose kernel
#: reaches the point, for a point of the cell's canonical part: skewed coordinates within the cell
#: ``u >= v >= w`` with ``u + v + w <= 3/2``. Every point is brought there by the cell's symmetries
#: (sorting its coordinates, and ``u -> 1 - u`` beyond the half of the cell), which the lattice and
#: the kernel share. The other offsets are at least ``sqrt(2)`` from that part (minimised over it;
#: the tests check the field against a sum over every vertex).
_CANONICAL_OFFSETS = torch.tensor([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1),
                                   (2, 0, 0), (1, 1, -1), (1, 0, -1), (0, 1, -1), (1, -1, 0)])


def _position(lattice: torch.Tensor) -> torch.Tensor:
    """Positions of lattice vertices ``(..., 3)`` (integer-valued) in the noise's coordinates."""
    return lattice + lattice.sum(-1, keepdim=True) * _SQUISH


def simplex_permutation(seed: int) -> torch.Tensor:
    """OpenSimplex's permutation of ``0..255`` for an integer seed (the reference's ``_init``).

    The seed runs through a 64-bit linear congruential generator (Knuth's MMIX constants, wrapped
    to a signed 64-bit integer); after three warm-up steps, step ``i = 255 .. 0`` picks entry
    ``(state + 31) mod (i + 1)`` of the remaining values for position ``i``.

    Args:
        seed: any Python or NumPy integer (the reference draws them in ``[-1e10, 1e10)``).

    Returns:
        ``(256,)`` int64, a permutation of ``0..255``.

    Raises:
        TypeError: ``seed`` is not an integer.

    >>> simplex_permutation(0)[:5].tolist()
    [254, 50, 92, 24, 36]
    """
    state = check_int("seed", seed, "an integer")

    def step(value: int) -> int:
        value = (value * _LCG_MULTIPLIER + _LCG_INCREMENT) % 2**64
        return value - 2**64 if value >= 2**63 else value

    for _ in range(3):
        state = step(state)
    source, permutation = list(range(256)), [0] * 256
    for i in range(255, -1, -1):
        state = step(state)
        r = (state + 31) % (i + 1)
        permutation[i], source[r] = source[r], source[i]
    return torch.tensor(permutation)


def _hash_gradients(lattice: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Gradient of each lattice vertex ``(V, 3)`` under each permutation ``(M, 256)``: ``(M, V, 3)``."""
    def lookup(index: torch.Tensor) -> torch.Tensor:
        return permutations.gather(1, index & 255)

    h = lookup(lattice[:, 0].expand(len(permutations), -1))
    h = lookup(h + lattice[:, 1])
    h = lookup(h + lattice[:, 2])
    return _GRADIENTS.to(permutations.device)[h % 24]


def _octave(points: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """One octave of OpenSimplex 3D at ``points`` ``(N, 3)`` (float64, lattice units) per permutation.

    ``sum_v (2 - |p - v|^2)^4 g_v . (p - v) / 103`` over the lattice vertices ``v`` within ``sqrt(2)``
    of the point ``p`` (``g_v``: the vertex's hashed gradient). The kernel weights of the (point,
    vertex) pairs form a sparse matrix; with ``g_v . (p - v) = g_v . p - g_v . v`` one product of it
    with the vertices' ``(g_v, g_v . v)`` gives every permutation's field.

    Returns:
        ``(M, N)`` float64.
    """
    device, count = points.device, len(permutations)
    skewed = points + points.sum(1, keepdim=True) * _STRETCH
    cell = skewed.floor()
    inside = skewed - cell  # in [0, 1)^3
    flipped = inside.sum(1, keepdim=True) > 1.5
    inside = torch.where(flipped, 1 - inside, inside)
    inside, axes = inside.sort(1, descending=True)  # canonical: u >= v >= w, u + v + w <= 3/2
    relative = inside + inside.sum(1, keepdim=True) * _SQUISH
    offsets = _CANONICAL_OFFSETS.to(device, torch.float64)
    offset_positions = _position(offsets)
    # 2 - |relative - o|^2 for every canonical offset o, by one matrix product; 0 beyond the reach
    attenuation = torch.addmm(_RADIUS2 - relative.square().sum(1, keepdim=True) - offset_positions.square().sum(1),
                              relative, 2 * offset_positions.T)
    weight = attenuation.clamp_(min=0).square_().square_()  # (N, K)
    # the vertices, as ids in the box of lattice vertices the chunk reaches: undo the sort and the flip
    low = cell.amin(0) - 1
    extent = cell.amax(0) + 2 - low + 1
    strides = torch.stack([extent[1] * extent[2], extent[2], torch.ones_like(extent[2])])
    sign = 1 - 2 * flipped.double()
    origin = (cell - low) @ strides + flipped[:, 0] * strides.sum()
    vertex = torch.addmm(origin[:, None], sign * strides[axes], offsets.T).long()  # (N, K), exact integers
    # the vertices' g_v and g_v . v (positions from the box's corner), for every permutation: every
    # vertex of the box, or only those used where the box is larger (a plane of a 2D field)
    extent = extent.long()
    vertex = vertex.flatten()
    if int(extent.prod()) <= vertex.numel():
        ids = torch.arange(int(extent.prod()), device=device)
    else:
        ids, vertex = torch.unique(vertex, return_inverse=True)
    lattice = torch.stack([ids // (extent[1] * extent[2]), ids // extent[2] % extent[1], ids % extent[2]], 1)
    lattice = lattice + low.long()
    gradients = _hash_gradients(lattice, permutations).double()  # (M, V, 3)
    corner = _position(low)
    along = torch.einsum("mvc,vc->mv", gradients, _position(lattice.double()) - corner)
    table = torch.cat([gradients.permute(2, 0, 1).reshape(-1, len(ids)), along]).T.contiguous()  # (V, 4M)
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        row_starts = torch.arange(0, weight.numel() + 1, len(offsets), device=device)
        matrix = torch.sparse_csr_tensor(row_starts, vertex, weight.flatten(), (len(points), len(ids)),
                                         check_invariants=False)
        sums = matrix @ table  # (N, 4M): sum_v w g_v (3 M columns), then sum_v w g_v . v
    relative = points - corner
    values = sum(relative[:, axis, None] * sums[:, axis * count:(axis + 1) * count] for axis in range(3))
    values = values - sums[:, 3 * count:]
    return values.T / _NORMALISER


# ---------------------------------------------------------------------------------------------------
# Multi-octave fields
# ---------------------------------------------------------------------------------------------------

_CHUNK = 2**14  # voxels per sparse matrix: its dense steps stay in the cache (1.7x faster than 2^18)


def simplex_octaves(spatial_shape: Sequence[int], seeds: Sequence[int], *, octaves: int = SIMPLEX_OCTAVES,
                    persistence: float = SIMPLEX_PERSISTENCE, frequency: float = SIMPLEX_FREQUENCY,
                    depth: float = 0.0, device: str | torch.device | None = None) -> torch.Tensor:
    """Multi-octave OpenSimplex noise for given integer seeds: the deterministic half of :func:`simplex_noise`.

    ``noise = sum_k persistence**k * opensimplex3(seed; frequency * 2**k * (x, y, z)) / 103`` for
    ``k < octaves``, at voxel ``(x, y, z) = (w, h, d)`` (3D) or ``(w, h, depth)`` (2D). For a seed
    ``s != 0`` it is, to within ``7e-5`` per octave (the reference's seams, module docstring), the
    reference's field after ``Simplex_CLASS.newSeed(s)``: ``rand_3d_octaves(shape, octaves,
    persistence, 1 / frequency)`` in 3D, ``rand_3d_fixed_T_octaves(shape, depth, ...)`` in 2D.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)``, voxels.
        seeds: one integer seed per field (:func:`simplex_permutation`).
        octaves: octaves summed, ``>= 1``.
        persistence: amplitude ratio of consecutive octaves, ``> 0``.
        frequency: frequency of the first octave, lattice cells per voxel, ``> 0``.
        depth: 2D only: coordinate of the plane along the third axis, voxels (the reference passes
            the diffusion step ``t``).
        device: where to compute.

    Returns:
        ``(len(seeds), *spatial_shape)`` float32.

    Raises:
        TypeError: a size, seed or octave count that is not an int; a parameter that is not a number.
        ValueError: a shape that is not 2 or 3 positive edges; no seeds; a parameter out of range.
    """
    shape = tuple(spatial_shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"`spatial_shape` must be (H, W) or (D, H, W), got {spatial_shape!r}")
    shape = tuple(check_int("spatial_shape", e, "positive ints", lambda v: v > 0) for e in shape)
    seeds = [check_int("seeds", s, "a sequence of integers") for s in seeds]
    if not seeds:
        raise ValueError("`seeds` must hold at least one seed, got []")
    octaves = check_int("octaves", octaves, "a positive int", lambda v: v > 0)
    persistence = check_real("persistence", persistence, "a positive number", lambda v: math.isfinite(v) and v > 0)
    frequency = check_real("frequency", frequency, "a positive number", lambda v: math.isfinite(v) and v > 0)
    depth = check_real("depth", depth, "a finite number")
    if len(shape) == 3 and depth != 0:
        raise ValueError(f"`depth` must be 0 for a 3D field (its voxels have their own depth), got {depth!r}")

    permutations = torch.stack([simplex_permutation(s) for s in seeds]).to(device)
    axes = [torch.arange(e, dtype=torch.float64, device=device) for e in shape]
    if len(shape) == 2:
        axes.insert(0, torch.tensor([depth], dtype=torch.float64, device=device))
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    voxels = torch.stack([x.flatten(), y.flatten(), z.flatten()], 1)  # (N, 3): x = W, y = H, z = D or depth
    noise = torch.zeros(len(seeds), len(voxels), dtype=torch.float64, device=device)
    for start in range(0, len(voxels), _CHUNK):
        chunk = voxels[start:start + _CHUNK]
        for k in range(octaves):
            noise[:, start:start + _CHUNK] += persistence**k * _octave(chunk * (frequency * 2**k), permutations)
    return noise.float().reshape(len(seeds), *shape)


def simplex_noise(shape: Sequence[int], *, generator: torch.Generator | None = None, octaves: int = SIMPLEX_OCTAVES,
                  persistence: float = SIMPLEX_PERSISTENCE, frequency: float = SIMPLEX_FREQUENCY,
                  depth: float = 0.0, device: str | torch.device | None = None) -> torch.Tensor:
    """AnoDDPM's simplex noise for a batch: one seeded field per sample and channel (Wyatt et al. 2022).

    Draws one seed per ``(sample, channel)`` in ``[-1e10, 1e10)`` (the reference's ``newSeed``) from
    ``generator``, then evaluates :func:`simplex_octaves`. Mean 0 over seeds; standard deviation about
    0.5 at the defaults (not 1: the reference does not rescale).

    Args:
        shape: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        generator: draws the seeds; ``None``: torch's global generator.
        octaves, persistence, frequency, depth, device: as :func:`simplex_octaves`.

    Returns:
        float32 tensor of ``shape``.

    Raises:
        TypeError, ValueError: ``shape`` is not 4 or 5 positive ints; as :func:`simplex_octaves`.
    """
    shape = tuple(shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"`shape` must be (B, C, H, W) or (B, C, D, H, W), got {shape!r}")
    shape = tuple(check_int("shape", e, "positive ints", lambda v: v > 0) for e in shape)
    count = shape[0] * shape[1]
    seeds = torch.randint(-10**10, 10**10, (count,), generator=generator,
                          device=None if generator is None else generator.device).tolist()
    return simplex_octaves(shape[2:], seeds, octaves=octaves, persistence=persistence, frequency=frequency,
                           depth=depth, device=device).reshape(shape)


# ---------------------------------------------------------------------------------------------------
# The model: a DDPM trained and reconstructing with simplex noise
# ---------------------------------------------------------------------------------------------------

#: Wyatt et al.'s partial diffusion depth for brain MRI, steps of 1000.
ANODDPM_LEVEL = 250
#: Standard deviation of one octave of :func:`simplex_octaves` (measured: 64 seeded 64^2 planes at a
#: non-integer frequency; integer lattice frequencies give less).
SIMPLEX_OCTAVE_SD = 0.314


def simplex_settings(image_size: int) -> tuple[float, int]:
    """``(frequency, octaves)`` of the reference's noise scaled to ``S``-voxel images (module docstring).

    First wavelength ``S / 4`` voxels, octaves down to a wavelength of 2 voxels.

    >>> simplex_settings(256)
    (0.015625, 6)
    >>> simplex_settings(64)
    (0.0625, 4)
    """
    image_size = check_int("image_size", image_size, "an int >= 8", lambda v: v >= 8)
    return 4 / image_size, max(1, math.floor(math.log2(image_size / 4)))


@dataclass(frozen=True)
class AnoDDPMConfig(DDPMConfig):
    """Arguments of :class:`AnoDDPM`, saved with every run; ``None``: :func:`simplex_settings`."""

    noise_levels: tuple[int, ...] = (ANODDPM_LEVEL,)
    octaves: int | None = None
    persistence: float = SIMPLEX_PERSISTENCE
    frequency: float | None = None


class AnoDDPM(DDPM):
    """A DDPM with simplex noise and partial diffusion (Wyatt et al., CVPR-W 2022).

    Args:
        spatial_dims, image_size, channels, num_res_blocks, attention_levels, num_train_timesteps, seed,
            in_channels: as :class:`~uadlab.models.ddpm.DDPM`.
        noise_levels: partial diffusion depths ``t_lambda``; their one-step reconstructions are averaged
            (Wyatt et al.: 250 alone).
        octaves: simplex octaves; ``None``: ``log2(image_size / 4)``.
        persistence: amplitude ratio of consecutive octaves (reference: 0.8).
        frequency: first octave's frequency, cycles per voxel; ``None``: ``4 / image_size``.

    Raises:
        TypeError, ValueError: as :class:`~uadlab.models.ddpm.DDPM`; a bad octave count, persistence or
            frequency.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128, 256),
                 num_res_blocks: int = 1, attention_levels: tuple[bool, ...] | None = None,
                 num_train_timesteps: int = 1000, noise_levels: tuple[int, ...] = (ANODDPM_LEVEL,), seed: int = 0,
                 in_channels: int = 1, octaves: int | None = None, persistence: float = SIMPLEX_PERSISTENCE,
                 frequency: float | None = None) -> None:
        super().__init__(spatial_dims, image_size=image_size, channels=channels, num_res_blocks=num_res_blocks,
                         attention_levels=attention_levels, num_train_timesteps=num_train_timesteps,
                         noise_levels=noise_levels, seed=seed, in_channels=in_channels)
        default_frequency, default_octaves = simplex_settings(self.image_size)
        self.octaves = check_int("octaves", default_octaves if octaves is None else octaves, "a positive int",
                                 lambda v: v > 0)
        self.persistence = float(check_real("persistence", persistence, "a positive number",
                                            lambda v: math.isfinite(v) and v > 0))
        self.frequency = float(check_real("frequency", default_frequency if frequency is None else frequency,
                                          "a positive number", lambda v: math.isfinite(v) and v > 0))
        self.noise_sd = SIMPLEX_OCTAVE_SD * math.sqrt(sum(self.persistence ** (2 * k) for k in range(self.octaves)))
        self.config = AnoDDPMConfig(**asdict(self.config), octaves=self.octaves, persistence=self.persistence,
                                    frequency=self.frequency)

    def draw_noise(self, shape: torch.Size, *, generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> torch.Tensor:
        """Simplex noise of unit expected variance, one seeded field per sample and channel.

        Args:
            shape: ``(B, C, ...)``.
            generator: draws the fields' seeds; ``None``: torch's global CPU generator (training).
            device: where the noise goes.
        """
        noise = simplex_noise(tuple(shape), generator=generator, octaves=self.octaves, persistence=self.persistence,
                              frequency=self.frequency, device=device)
        return noise / self.noise_sd


register("anoddpm", AnoDDPM, AnoDDPMConfig, erasing=False,
         description="DDPM with simplex noise and partial diffusion to t = 250 (Wyatt et al. 2022)")
