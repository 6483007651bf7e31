"""mididdsp: expressive MIDI-to-audio synthesis with differentiable DSP, in PyTorch."""
from mididdsp.errors import InputFileError, MididdspError, ModelError

__version__ = "0.1.0"

__all__ = ["MididdspError", "InputFileError", "ModelError", "__version__"]
