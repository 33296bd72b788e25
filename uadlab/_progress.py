"""Progress bars behind a flag, for every layer: tqdm in a terminal, a line of text in a notebook.

Library code does not print: a function shows a bar only when its caller passes ``progress=True``
(the command line does unless ``-q``; the labs pass ``INTERACTIVE``). Every bar of the package comes
from :func:`progress_bar`, which keeps three rules:

- **One bar stays.** A bar opened while another is open is transient (``leave=False``): a study
  leaves its bar over the runs, a training its bar over the epochs, while the bars inside them (a
  run's epochs, an epoch's batches, a prediction's subjects) vanish when done.
- **A finished bar is complete.** :meth:`finish <_Bar.finish>` sets the total to the count reached,
  so a run that ends early by design (early stopping, a model fitted in one pass) ends at 100 %; a
  bar closed short (an error, an interrupt) keeps its count.
- **A saved notebook holds text, never a widget.** In a Jupyter kernel a bar is a line of text in a
  display output, updated in place (``update_display_data``), not tqdm's ipywidgets bar. A widget's
  view in a saved notebook names a widget model that is gone with the kernel, so a reopened
  notebook showed "Error displaying widget: model not found" (and a console error) for every bar
  it ever drew, transient ones included. The transient bars of a cell at one depth share one
  output, emptied when they close, so a study adds three outputs to its cell rather than one per
  epoch and prediction (JupyterLab folds a cell's outputs beyond 50 behind "Show more outputs").
  A line holds at most :data:`NOTEBOOK_COLUMNS` characters, so it does not wrap in a 1280 px window.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.std import tqdm

__all__ = ["NOTEBOOK_COLUMNS", "progress_bar", "in_notebook"]

#: Characters in a notebook bar's line (label, percentage, bar, counts, times, postfix, cut to fit).
NOTEBOOK_COLUMNS = 100

#: A bar's layout: the label, a 20-character bar, the counts, the times and the postfix (cut at the
#: line's width, tqdm's ``ncols``), so that a long postfix never squeezes the bar to nothing.
_FORMAT = "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

_OPEN: list[Any] = []  # the bars open now, outermost first
_SLOTS: dict[int, dict[int, Any]] = {}  # a notebook cell's (execution count's) outputs of transient bars by depth


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, papermill, nbclient), not a terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def progress_bar(progress: bool, iterable: Iterable | None = None, *, desc: str, unit: str,
                 total: float | None = None, initial: float = 0, unit_scale: bool = False, leave: bool = True) -> Any:
    """A tqdm bar when ``progress``, else a silent stand-in with the same methods; see the module docstring.

    Use it as a context manager, so that it closes (and stops counting as open) whatever happens::

        with progress_bar(progress, total=n, desc="3D-None", unit="epoch") as bar:
            bar.update(1)

    Args:
        progress: show the bar.
        iterable: what the bar counts while iterated (``for item in bar``), or ``None`` for a bar
            moved by ``update``.
        desc: the label, short (it leads the line): ``"3D-None"``, ``"runs"``.
        unit: what one step is: ``"epoch"``, ``"subject"``.
        total: the number of steps (``None``: ``len(iterable)`` where it has one, else unknown).
        initial: the count to start from (a resumed run's epochs, a resumed download's bytes).
        unit_scale: show counts with SI prefixes (``"12.3MB"``).
        leave: keep the finished bar; a bar opened inside another is transient whatever this says.

    Returns:
        The bar: ``update(n)``, ``set_postfix(...)``, ``finish()``, ``close()``, iteration.
    """
    if not progress:
        return _Quiet(iterable)
    depth = len(_OPEN)
    known = total is not None or hasattr(iterable, "__len__")  # the layout needs a total for its percentage
    options = {"desc": desc, "unit": unit, "total": total, "initial": initial, "unit_scale": unit_scale,
               "leave": leave and depth == 0, "bar_format": _FORMAT if known else None}
    if in_notebook():
        bar = _NotebookBar(iterable, slot=_slot(depth, options["leave"]), **options)
    else:
        bar = _TerminalBar(iterable, dynamic_ncols=True, **options)
    _OPEN.append(bar)
    return bar


def _slot(depth: int, leave: bool) -> Any:
    """The display output of a notebook bar: a new one for a bar that stays, else the output that the
    transient bars at ``depth`` share (made by the first of them) until the cell ends or a bar that
    stays opens (its inner bars then show below it).
    """
    from IPython import get_ipython
    from IPython.display import display

    if leave:
        _SLOTS.clear()
        return display({"text/plain": ""}, raw=True, display_id=True)
    cell = get_ipython().execution_count
    if cell not in _SLOTS:
        _SLOTS.clear()  # an earlier cell's outputs are not this cell's
        _SLOTS[cell] = {}
    slots = _SLOTS[cell]
    if depth not in slots:
        slots[depth] = display({"text/plain": ""}, raw=True, display_id=True)
    return slots[depth]


class _Bar:
    """What uadlab's tqdm bars add: :meth:`finish`, and leaving the open bars when closed."""

    def finish(self) -> None:
        """End the bar complete at the count reached: a run that stopped early by design shows 100 %."""
        self.total = self.n
        self.refresh()

    def close(self) -> None:
        """Close the bar; a bar closed short of its total keeps its count."""
        super().close()
        if self in _OPEN:
            _OPEN.remove(self)


class _TerminalBar(_Bar, tqdm):
    """tqdm's text bar on stderr, cut at the terminal's width, with :meth:`finish`."""


class _NotebookBar(_Bar, tqdm):
    """A bar as one line of text in a notebook display output (``slot``), updated in place.

    tqdm's own notebook bar is an ipywidgets widget; this one sends ``text/plain`` only, so a saved
    notebook holds the bar's last line and nothing that needs the kernel.
    """

    monitor_interval = 0  # no tqdm monitor thread: displays come from the thread that moves the bar

    def __init__(self, iterable: Iterable | None, *, slot: Any, **options: Any) -> None:
        self._slot = slot
        # gui=True: tqdm writes nothing itself and calls display() to show the bar
        super().__init__(iterable, gui=True, ncols=NOTEBOOK_COLUMNS, **options)
        self.display()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Show the bar's line in its output (``msg``, ``pos``: tqdm's, unused)."""
        self._slot.update({"text/plain": str(self)}, raw=True)
        return True

    def close(self) -> None:
        """Close the bar: its output keeps the last line, or is emptied for a transient bar."""
        if self.disable:
            return
        super().close()
        self._slot.update({"text/plain": str(self) if self.leave else ""}, raw=True)


class _Quiet:
    """Silent stand-in for a bar when progress is off; iterates ``iterable`` when given one."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(() if self._iterable is None else self._iterable)

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to close."""

    def update(self, n: float = 1) -> None:
        """Ignore the step."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Ignore the postfix."""

    def finish(self) -> None:
        """Nothing to finish."""

    def close(self) -> None:
        """Nothing to close."""
