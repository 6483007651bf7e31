"""General MIDI program -> a model's instrument: the exact instrument where the model has it; else one of the same
family (strings, brass, reed, pipe), the one whose training pitch range best fits the track (its median pitch within
an octave of the track's); families with no trained instrument (piano, organ, guitar, bass, synths, ...) and tracks
no family member fits borrow from :data:`FAMILY_FALLBACK`, then the best fit by pitch. What
:meth:`mididdsp.render.MidiModel.instrument_for` answers, and ``mididdsp instruments`` lists.
"""
from __future__ import annotations

import functools
from typing import Callable

MAX_RANGE_MISFIT = 12.0     # semitones between a track's median pitch and a family member's: beyond, next family
# General MIDI names of the instruments a model may know that pretty_midi cannot look up by their short name
GM_ALIASES = {"saxophone": 65, "sax": 65, "horn": 60, "french horn": 60, "contrabass": 43, "double bass": 43,
              "bass": 43}
# Families without a trained instrument borrow from these families, in order (then: every instrument).
FAMILY_FALLBACK = {
    "Piano": ("Strings", "Pipe"), "Chromatic Percussion": ("Pipe", "Strings"), "Organ": ("Pipe", "Reed", "Brass"),
    "Guitar": ("Strings",), "Bass": ("Strings", "Brass", "Reed"), "Strings": ("Strings",),
    "Ensemble": ("Strings", "Brass"), "Brass": ("Brass", "Reed"), "Reed": ("Reed", "Pipe"), "Pipe": ("Pipe", "Reed"),
    "Synth Lead": ("Brass", "Strings"), "Synth Pad": ("Strings", "Pipe"), "Synth Effects": ("Strings",),
    "Ethnic": ("Strings", "Reed"), "Percussive": ("Pipe",), "Sound Effects": ("Strings",)}


@functools.lru_cache(maxsize=None)
def instrument_program(name: str) -> int | None:
    """General MIDI program of a model instrument name (``violin`` -> 40), or None. Cached: pretty_midi's name
    lookup normalises all 128 program names on every call (2.5 s over a 50-file batch)."""
    from mididdsp.errors import MididdspError
    from mididdsp.score import gm_program_number

    key = name.lower().replace("_", " ")
    if key in GM_ALIASES:
        return GM_ALIASES[key]
    try:
        return gm_program_number(key)
    except MididdspError:
        return None


def choose_instrument(program: int, pitches: list[int] | None, instruments: list[str],
                      median_pitch: Callable[[str], float]) -> tuple[str, str]:
    """(instrument, how it was chosen) among a model's ``instruments`` (names, in the model's order) for a General
    MIDI ``program`` and the track's ``pitches``; ``median_pitch(name)`` is an instrument's median training pitch."""
    from mididdsp.score import gm_program_family, gm_program_name

    by_program = {instrument_program(name): name for name in instruments}
    if program in by_program:
        return by_program[program], "exact"
    family = gm_program_family(program)
    centre = float(sorted(pitches)[len(pitches) // 2]) if pitches else 60.0
    families = {name: gm_program_family(p) for name, p in ((n, instrument_program(n)) for n in instruments)
                if p is not None}
    for wanted in FAMILY_FALLBACK.get(family, ()):
        candidates = [name for name, fam in families.items() if fam == wanted]
        if candidates:
            best = min(candidates, key=lambda name: abs(median_pitch(name) - centre))
            if abs(median_pitch(best) - centre) > MAX_RANGE_MISFIT:
                continue  # e.g. a bassoon line is better played by a cello than by a flute two octaves up
            how = "same family" if wanted == family else f"{family.lower()} -> {wanted.lower()} family"
            return best, f"{how}, by pitch range ({gm_program_name(program)})"
    best = min(instruments, key=lambda name: abs(median_pitch(name) - centre))
    return best, f"no trained {family.lower()} instrument fits, by pitch range ({gm_program_name(program)})"
