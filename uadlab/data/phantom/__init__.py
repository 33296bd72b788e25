"""The default data set: healthy subjects, tumour and stroke cases simulated from real brain MRI.

Bengs et al. 2021 (Sec. 2.1, 3) train on T1 scans of 2008 healthy subjects (a private clinical
data set) and test on BraTS 2019 (glioma) and ATLAS R1.2 (chronic stroke). None of these can ship
with a library (private, or registration and a data use agreement), so the default data set is
*simulated from real MRI that does ship*: the MNI152 2009 T1 template and its tissue maps inside
nilearn (or, when passed, real skull-stripped healthy T1 scans); see :func:`load_sources` for why.

A **healthy subject** is a source brain under a seeded smooth random deformation (an affine of up
to 10 deg, 12 % per axis and 5 mm plus a 6-12 mm elastic field, applied in one interpolation pass), a
multiplicative bias field, gamma contrast jitter, a global intensity scale and offset, and Rician
noise. The deformation is that large because the variety of the healthy cohort decides how hard the
phantom is (``docs/phantom_realism.md``: with one source and small warps, lesions were far easier
than with 17 real source brains). A **lesion case** is a healthy subject with one inserted lesion
and its mask:

- ``tumour`` (BraTS-like): one large irregular mass in white matter with a hypointense necrotic core,
  a mildly hypointense oedema ring, heterogeneous texture and mass effect (tissue pushed radially
  away). The lesion mask is the whole tumour (core + oedema), as BraTS ``seg > 0``.
- ``stroke`` (ATLAS-like): a CSF-like hypointense lesion (plus up to a few small satellites) in grey
  or white matter, volume drawn log-uniformly so that a lesion-size analysis has a spread.

Lesion intensities are drawn from the source's own tissue statistics and mixed with the local
tissue, then undergo the same bias, contrast and noise as the rest of the subject, so a global
intensity threshold cannot pick them out.

Seeds: a subject is a pure function of ``(source, kind, seed, params, grid)``. A lesion case and the
healthy subject with the same seed share their anatomy, intensity jitter and noise exactly: the
healthy subject is the lesion case's *paired healthy counterpart* (useful for tests and teaching).
:func:`subject_seed` derives a subject's seed from ``(base_seed, cohort, index)`` so that a subject
does not depend on how many others were built before it.

The package splits the simulation along its steps: :mod:`.params` (the knobs), :mod:`.sources`
(source brains), :mod:`.anatomy` (healthy deformation and intensities), :mod:`.lesions` (tumour and
stroke insertion), :mod:`.subjects` (seeds and :func:`simulate_subject`, which chains them).

Shape:
    - ``image``: ``(X, Y, Z)`` float32, ``>= 0``, zero outside the brain; RAS+ orientation.
    - ``brain_mask``, ``lesion_mask``: ``(X, Y, Z)`` bool.
    - ``affine``: ``(4, 4)`` float64, voxel to RAS mm, isotropic voxels of ``voxel_mm``.
"""

from uadlab.data.phantom.params import PhantomParams
from uadlab.data.phantom.sources import SourceBrain, load_sources
from uadlab.data.phantom.subjects import KINDS, PhantomSubject, simulate_subject, subject_seed

__all__ = ["KINDS", "PhantomParams", "PhantomSubject", "SourceBrain", "load_sources", "simulate_subject",
           "subject_seed"]
