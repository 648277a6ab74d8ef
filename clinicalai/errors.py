"""Errors a user can act on.

Every failure caused by the user's input (a bad file, a model whose card does not match, an
untrusted model, a missing GPU) is raised as :class:`ClinicalAIError` with one sentence that
says what is wrong and, where possible, what to do. The command line prints that sentence on
one line and exits non-zero; the GUIs show it in one dialog. Anything else is a bug.
"""

from __future__ import annotations


class ClinicalAIError(Exception):
    """A problem with the user's input, explained in one sentence."""


class InputError(ClinicalAIError):
    """An image, mask or table the user gave cannot be used."""


class TimeSeriesError(InputError):
    """A 4D image (time points: cine, fMRI, dynamic series) where one 3D volume is read.
    ``time_points``: how many, so that a front end can offer them (``--frame K``, the browser's
    time-point chooser)."""

    def __init__(self, message: str, time_points: int) -> None:
        super().__init__(message)
        self.time_points = int(time_points)


class FitNotConfirmed(InputError):
    """The input is far from what the chosen model was made for (a brain MR given to the
    cardiac segmenter, a mask given to the PET ensemble), and the user has not said to run
    anyway. Raised before anything in the scene changes; a GUI asks for confirmation and
    reruns with ``confirmed_fit=True``.

    Attributes:
        problems: the :class:`clinicalai.models.fit.FitProblem` s (``code``, ``message``).
    """

    def __init__(self, problems) -> None:
        self.problems = list(problems)
        lines = "; ".join(p.message for p in self.problems)
        super().__init__(f"the input may not fit the model: {lines}. Run anyway?")


class ModelError(ClinicalAIError):
    """A model file or its card cannot be used (missing, mismatched, untrusted)."""


class DeviceError(ClinicalAIError):
    """The requested compute device is not available."""


class Cancelled(ClinicalAIError):
    """The user cancelled a running workflow; nothing was written."""

    def __init__(self, message: str = "cancelled by the user; nothing was changed") -> None:
        super().__init__(message)


def argument_errors_as_input_errors(parser):
    """Make ``parser`` (an ``argparse.ArgumentParser``) raise :class:`InputError` for a bad
    command line instead of printing its usage and exiting, so the command line reports it
    as every other user error: one line on stderr, exit status 1. Returns ``parser``."""

    def error(message: str):
        raise InputError(f"{parser.prog}: {message} (see '{parser.prog} --help')")

    parser.error = error
    return parser
