"""CPU and multi-process speed machinery: same numbers (up to float rounding), less wall time.

Nothing here changes what a model computes; each piece was kept because it was measured to pay
(README, "Speed"). A reader learning the method can skip this package: the models and the training
loop call it in one line each.

- :mod:`~uadlab.speed.subpixel`: the VAE decoder's output layer as one stride-1 convolution and a
  pixel shuffle on a CPU (:class:`SubPixelConvTranspose`; :func:`subpixel_conv_transpose` picks the 2D
  or 3D class).
- :mod:`~uadlab.speed.channels_last`: :func:`to_device` puts a model on its device in the weight
  layout that runs fastest there (channels-last for the VAEs on a CPU).
- :mod:`~uadlab.speed.distributed`: data-parallel training under ``torchrun`` (gloo on CPU, NCCL on
  CUDA).
- :mod:`~uadlab.speed.thread_tuner`: the thread count of a training, chosen from measured step times
  within the process's share of the cores (:class:`ThreadTuner`, used by the fit core).

It sits below :mod:`uadlab.models` in the layers (``pyproject.toml``): it imports only torch, NumPy and
the thread budget and argument checks below it (:mod:`uadlab._threads`, :mod:`uadlab._checks`).
"""

from uadlab.speed.channels_last import to_device
from uadlab.speed.subpixel import SubPixelConvTranspose, subpixel_conv_transpose

__all__ = ["SubPixelConvTranspose", "subpixel_conv_transpose", "to_device"]
