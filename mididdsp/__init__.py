"""mididdsp: expressive MIDI-to-audio synthesis with differentiable DSP, in PyTorch.

The public API (imported on first use, so ``import mididdsp`` stays cheap)::

    model = mididdsp.load_model()                 # the shipped MIDI model (or a directory)
    score = mididdsp.read_midi("song.mid")
    expression = model.expression(score, seed=0)  # a NoteExpression: edit it, save it, load it
    out = model.render(score, expression, seed=0) # out.audio, out.sample_rate, out.stems
    rows = mididdsp.render_many(["songs/"], "out/", seed=0)   # a folder of MIDI files; the report's rows
"""
from mididdsp.errors import InputFileError, MididdspError, ModelError

__version__ = "0.1.0"

_LAZY = {"load_model": "mididdsp.render", "MidiModel": "mididdsp.render", "read_midi": "mididdsp.score",
         "Score": "mididdsp.score", "NoteExpression": "mididdsp.expression.table", "render_many": "mididdsp.batch"}

__all__ = ["MididdspError", "InputFileError", "ModelError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mididdsp' has no attribute {name!r}")
