"""The synthesis generator's settings and constants, without torch: :class:`GeneratorConfig` (its ``model:``
section), the constants its controls are built with, and what follows from them alone (the receptive field, the
compiled controls' settings). :mod:`mididdsp.synthesis.generator` (training, torch) and
:mod:`mididdsp.synthesis.inference` (the render's, numpy) both read them from here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from mididdsp.dsp.constants import DB_FLOOR, FRAME_RATE, SAMPLE_RATE
from mididdsp.models import settings_from_dict

EXPRESSION_INPUTS = ("volume", "volume_fluctuation", "volume_peak_position", "vibrato", "brightness", "attack_noise",
                     "vibrato_rate_hz")
SCALED_INPUTS = EXPRESSION_INPUTS[:6]
# Physical quantity of each scaled control, (low, high) <-> 0..1; the model stores the ranges of the extractor it
# was trained against (expression_ranges of the synthesis coder), so a table's numbers mean the same to both.
PHYSICAL_UNITS = {"volume": "dB", "volume_fluctuation": "dB", "volume_peak_position": "fraction",
                  "vibrato": "cents", "brightness": "harmonic number", "attack_noise": "dB"}
ATTACK_FRAMES = 10            # the attack-noise control's window (40 ms), as the extractor measures it
SILENCE_DB = -100.0           # level of silence (before the first note, end of release tails)
GLIDE_FRAMES = 8              # legato glide between two pitches (32 ms, centred on the onset)
LEGATO_GAP_S = 0.02           # a note starting within this of the previous one's end is legato
VIBRATO_FADE_S = 0.15
DEVIATION_SMOOTHING = 75      # frames (0.3 s) of each of two moving averages on the learned f0 drift
RIPPLE = 0.03                 # learned level ripple, relative to the tent's depth: at 0.1 it moved the measured
                              # peak by up to 0.2 on gently peaked notes (the extractor's top is 1 dB wide)
NOISE_RELATIVE_DB = 80.0      # noise_reference "level": the sustained noise lies 0 .. this many dB under the level
RATE_RANGE = 2.0              # level_shape "learned": the fall rates span e^-2 .. e^2 (ratio 55)
EDGE_FRAMES = 8.0             # time constant of the learned attack / release dips of the level (32 ms)
LOGIT_RANGE = 12.0            # harmonic logits are squashed into +-this (e^24 between strongest and weakest)
HEADS = 6                     # per-frame heads before the harmonic and noise-band outputs
N_FEATURES = 13 + 5           # per-frame note features + the note's expression (without vibrato)


@dataclass
class GeneratorConfig:
    """Sizes of :class:`SynthesisGenerator` (``model:`` section of a ``synthesis_generator`` config)."""

    n_instruments: int = 1
    instrument_embedding: int = 16
    channels: int = 64                  # width of the dilated convolution stack
    layers: int = 6                     # dilations 1, 2, 4, ... (receptive field 2^layers - 1 frames either side)
    kernel_size: int = 3
    n_harmonics: int = 60
    n_noise_bands: int = 65
    max_deviation_cents: float = 50.0
    noise_shape_db: float = 10.0        # the noise bands lie within +-this of the frame's level
    noise_reference: str = "absolute"   # "level": the noise level is learned in dB under the harmonic level
    level_shape: str = "tent"           # "learned": a learned unimodal contour around the peak (module docstring)
    reverb: str | None = "learned"
    reverb_seconds: float = 1.0
    sample_rate: int = SAMPLE_RATE
    ranges: dict = field(default_factory=dict)  # {scaled control: [low, high]} physical range; all six needed

    @classmethod
    def from_dict(cls, values: dict) -> "GeneratorConfig":
        config = settings_from_dict(cls, values)
        missing = [name for name in SCALED_INPUTS if name not in (config.ranges or {})]
        if missing:
            raise ValueError(f"model.ranges lacks {missing}: the generator needs the physical range of each control")
        if config.level_shape not in ("tent", "learned"):
            raise ValueError(f"model.level_shape {config.level_shape!r}: expected 'tent' or 'learned'")
        if config.noise_reference not in ("absolute", "level"):
            raise ValueError(f"model.noise_reference {config.noise_reference!r}: expected 'absolute' or 'level'")
        for name, pair in config.ranges.items():
            low, high = (float(v) for v in pair)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"model.ranges.{name}: expected finite low < high, got {pair}")
        return config

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ranges"] = {k: [float(v) for v in pair] for k, pair in self.ranges.items()}
        return out


def limit_hz(config: GeneratorConfig) -> float:
    """The highest harmonic frequency kept (Hz): 0.95 of Nyquist."""
    return 0.95 * config.sample_rate / 2


def receptive_field(config: GeneratorConfig) -> int:
    """Frames either side that one output frame depends on: the convolution stack and the drift's average."""
    return sum(2 ** i * (config.kernel_size // 2) for i in range(config.layers)) + 2 * (DEVIATION_SMOOTHING // 2)


def kernel_settings(config: GeneratorConfig, release_per_frame: float) -> np.ndarray:
    """The constants :func:`mididdsp.synthesis.kernels.frame_controls` takes, in its order (float64 [19])."""
    return np.array([config.level_shape == "learned", config.noise_reference == "level", config.noise_shape_db,
                     config.max_deviation_cents, config.n_harmonics, limit_hz(config), release_per_frame,
                     SILENCE_DB, DB_FLOOR, RIPPLE, RATE_RANGE, EDGE_FRAMES, ATTACK_FRAMES, NOISE_RELATIVE_DB,
                     DEVIATION_SMOOTHING, FRAME_RATE, GLIDE_FRAMES, LEGATO_GAP_S, VIBRATO_FADE_S], np.float64)
