"""Errors a user can cause (bad file, bad value, missing model).

Raise :class:`MididdspError` with one line that names the file or value and says what was expected.
The CLI prints it as ``error: <message>`` and exits with status 1, without a traceback.
"""


class MididdspError(Exception):
    """A problem with the user's input: its message is shown to the user as it is."""


class InputFileError(MididdspError, ValueError):
    """An input file that cannot be used (not audio/MIDI, empty, truncated, NaN samples, ...)."""


class ModelError(MididdspError, FileNotFoundError):
    """A model directory that is missing, incomplete or corrupt."""
