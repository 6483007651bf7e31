"""The note expression's names, units and default ranges, without torch (:mod:`mididdsp.expression.controls`
measures them; the table, the prior and the render read them from here)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from mididdsp.errors import MididdspError

CONTROL_NAMES = ("volume", "volume_fluctuation", "volume_peak_position", "vibrato", "brightness", "attack_noise")
# Physical twin of each scaled control, and its (low, high) range mapped to 0 .. 1.
PHYSICAL_OF = {"volume": "volume_db", "volume_fluctuation": "volume_fluctuation_db",
               "volume_peak_position": "peak_position", "vibrato": "vibrato_extent_cents",
               "brightness": "brightness_centroid", "attack_noise": "attack_noise_db"}
CONTROL_RANGES: dict[str, tuple[float, float]] = {
    "volume": (-60.0, 0.0), "volume_fluctuation": (0.0, 12.0), "volume_peak_position": (0.0, 1.0),
    "vibrato": (0.0, 60.0), "brightness": (1.0, 8.0), "attack_noise": (-80.0, -30.0)}
PHYSICAL_NAMES = ("volume_db", "volume_fluctuation_db", "peak_position", "vibrato_extent_cents", "vibrato_rate_hz",
                  "brightness_centroid", "attack_noise_db")
PHYSICAL_UNITS = {"volume_db": "dB", "volume_fluctuation_db": "dB", "peak_position": "fraction of the note",
                  "vibrato_extent_cents": "cents", "vibrato_rate_hz": "Hz", "brightness_centroid": "harmonic number",
                  "attack_noise_db": "dB"}

# A recording's overall gain (microphone, mixing, the player's general dynamic) is not note expression: the dB
# levels are stored relative to it. ``level_offset_db`` is how far the recording's median note level lies from the
# instrument's reference level; the controls in LEVEL_CONTROLS are stored minus it (so a quiet recording's notes
# keep their spread on the scale instead of sitting at 0), and a render adds it back.
LEVEL_OFFSET = "level_offset_db"
LEVEL_CONTROLS = ("volume", "attack_noise")


# ------------------------------------------------------------------------------------------------ scaling
def control_ranges(ranges: Mapping[str, Sequence[float]] | None = None) -> dict[str, tuple[float, float]]:
    """Every control's ``(low, high)``: ``ranges`` (e.g. a model's ``expression_ranges``, see
    :mod:`mididdsp.expression.calibrate`) where given, :data:`CONTROL_RANGES` for the rest. MididdspError for
    an unknown control or a range that is not two finite numbers with low < high."""
    resolved = dict(CONTROL_RANGES)
    for name, pair in (ranges or {}).items():
        if name not in CONTROL_RANGES:
            raise MididdspError(f"expression range for unknown control {name!r}; expected one of "
                                f"{', '.join(CONTROL_NAMES)}")
        try:
            low, high = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise MididdspError(f"expression range of {name!r}: expected [low, high], got {pair!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise MididdspError(f"expression range of {name!r}: expected finite low < high, got [{low}, {high}]")
        resolved[name] = (low, high)
    return resolved
