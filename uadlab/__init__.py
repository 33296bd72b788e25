"""uadlab: unsupervised anomaly detection in brain MRI with 2D and 3D VAEs and spatial erasing.

A teaching and benchmark suite reproducing Bengs, Behrendt et al., "3-Dimensional Deep Learning with
Spatial Erasing for Unsupervised Anomaly Segmentation in Brain MRI" (IJCARS 2021). The module list is
the map of the method; see ``docs/ARCHITECTURE.md``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
