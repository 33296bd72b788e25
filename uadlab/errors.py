"""Exception types for bad files and data.

Programming errors at a public boundary (a wrong type or value passed by code) raise the built-in
``TypeError``/``ValueError``. Problems with what a *user* brought — a corrupt NIfTI, a manifest with
an unknown key, a run folder that already exists — raise one of these, so the command line can print
one clear line naming the file and the problem instead of a traceback. IPython and Jupyter show them
as one line too (:meth:`UadlabError._render_traceback_`); ``%tb`` then shows the traceback.
"""

import traceback

__all__ = ["UadlabError", "VolumeError", "ManifestError", "DatasetError", "RunError", "DownloadError",
           "PackError", "CourseError", "UadlabWarning"]


class UadlabError(Exception):
    """Base class of every error about user files, data sets and runs."""

    def _render_traceback_(self) -> list[str]:
        """How IPython shows the error: ``RunError: <message>``, one line, as the command line does.

        IPython (a notebook cell, ``ipython``) calls this instead of formatting the traceback
        (``InteractiveShell.showtraceback``); the cell still fails, so papermill and nbclient still
        stop. The first call gives the one line; later ones (``%tb`` on the same error) the full traceback.

        Returns:
            The lines IPython prints (and a kernel sends as the error output's ``traceback``).
        """
        if getattr(self, "_rendered", False):
            return "".join(traceback.format_exception(type(self), self, self.__traceback__)).splitlines()
        self._rendered = True
        return [f"{type(self).__name__}: {self}  (%tb shows the traceback)"]


class VolumeError(UadlabError):
    """A NIfTI volume is unreadable, corrupt, of the wrong dimensionality, holds NaN/inf voxels,
    or does not match its partner (image vs mask shape or affine), or a brain mask is empty.
    """


class ManifestError(UadlabError):
    """A data-set manifest is invalid (bad YAML, unknown or missing keys) or files it names are
    missing or unreadable; all problems are listed in one message.
    """


class DatasetError(UadlabError):
    """A built data-set folder (``uadlab data build``) is missing, incomplete or inconsistent, or
    would be overwritten without ``overwrite=True``.
    """


class RunError(UadlabError):
    """A training run folder exists and would be overwritten, lacks its checkpoint, or does not
    match the configuration it is resumed with.
    """


class DownloadError(UadlabError):
    """A download (``uadlab data fetch``) failed: the server is unreachable or refused, the
    connection broke (the partial file is kept and resumed next time), or the file's checksum is
    wrong (it is deleted).
    """


class PackError(UadlabError):
    """A course pack (``uadlab course prepare``) is damaged (a file missing, or its size or checksum not
    the one ``pack.json`` lists), incomplete, moved, or does not match the lab that reads it (another
    profile, seed or uadlab version); or a folder is refused as a pack's output.
    """


class CourseError(UadlabError):
    """An nbgrader course folder (``uadlab course release``) is refused, nbgrader is missing, or it failed on
    a lab; the message names the folder or the lab.
    """


class UadlabWarning(UserWarning):
    """Something the user should know that does not stop the work.

    The preprocessing cache could not be written (the build goes on without it), fewer worker
    processes than asked (capped at the usable cores), a run evaluated before its training finished.
    The command line prints each as one ``uadlab: warning:`` line.
    """
