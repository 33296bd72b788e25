"""Progress bars of the training loop, behind a flag: tqdm when asked for, silence otherwise.

Library code does not print; :func:`uadlab.training.fit.fit` shows an epoch bar and a batch bar only
when its caller passes ``progress=True`` (``uadlab train`` does unless ``-q``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(progress: bool, **kwargs: Any) -> Any:
    """A manually updated ``tqdm`` bar (``kwargs`` as tqdm's) when ``progress``, else a silent stand-in."""
    if progress:
        from tqdm.auto import tqdm

        return tqdm(**kwargs)
    return _Quiet()


class _Quiet:
    """Silent stand-in for a tqdm bar when progress is off."""

    def update(self, n: int = 1) -> None:
        """Ignore the step."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Ignore the postfix."""

    def close(self) -> None:
        """Nothing to close."""
