"""The numpy vibrato measure (the render's, for a MIDI file's pitch bend) against the extractor's torch measure it
copies: the same extents to rounding, on bends that exercise each step (frame selection, trend, windows, gate)."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import mididdsp.expression.vibrato as vibrato_torch
import mididdsp.expression.vibrato_numpy as vibrato_numpy
from mididdsp.expression.controls import NoteFrames
from mididdsp.expression.vibrato_numpy import note_vibrato_extent

FR = 250
TOLERANCE_CENTS = 1e-6


def torch_extent(deviation, note_index, count):
    extent, _ = vibrato_torch.vibrato(torch.from_numpy(deviation)[None],
                                      NoteFrames(torch.from_numpy(note_index)[None], count))
    return extent.numpy()


def voice(notes, gap_s=0.1, noise_cents=0.0, seed=0):
    """[T] deviation in cents and [T] note index from notes ``(duration_s, cents(t))``, t in s from the onset."""
    rng = np.random.default_rng(seed)
    pieces, index = [np.zeros(int(gap_s * FR))], [np.full(int(gap_s * FR), -1)]
    for number, (duration_s, cents) in enumerate(notes):
        t = np.arange(int(round(duration_s * FR))) / FR
        pieces += [cents(t), np.zeros(int(gap_s * FR))]
        index += [np.full(len(t), number), np.full(int(gap_s * FR), -1)]
    deviation = np.concatenate(pieces)
    return deviation + rng.normal(0.0, noise_cents, len(deviation)), np.concatenate(index).astype(np.int64)


def sine(rate_hz, extent_cents, delay_s=0.0, phase=0.3):
    return lambda t: np.where(t >= delay_s, extent_cents * np.sin(2 * math.pi * rate_hz * (t - delay_s) + phase), 0.0)


def with_jump(cents, frames, at_end=False, jump=-200.0):
    """A transition: the first (or last) ``frames`` frames still (already) read another pitch."""
    def bent(t):
        out = cents(t)
        out[slice(len(t) - frames, None) if at_end else slice(0, frames)] += jump
        return out
    return bent


LENGTHS_S = (0.15, 0.17, 0.2, 0.23, 0.26, 0.3, 0.4, 0.6, 1.0, 2.0, 3.0)
SCENES = {
    "lengths": [(s, sine(5.5, 30.0)) for s in LENGTHS_S],
    "delayed onset": [(s, sine(5.5, 30.0, delay_s=0.4 * s)) for s in LENGTHS_S],
    "ramp": [(s, lambda t: 150.0 * t - 40.0) for s in LENGTHS_S],
    "transitions": [(s, with_jump(sine(5.5, 30.0), f, end)) for s in (0.3, 0.6, 1.5) for f in (5, 20, 35)
                    for end in (False, True)],
    "rate limits": [(s, sine(rate, 30.0)) for s in (0.25, 0.4, 1.0) for rate in (2.6, 3.0, 3.3, 8.7, 9.0, 9.4)],
    "few cycles": [(s, sine(3.6, 25.0)) for s in (0.22, 0.26, 0.3, 0.34, 0.4)],
    "octave glitch": [(1.0, lambda t: sine(6.0, 20.0)(t) + np.where(np.arange(len(t)) == 120, 1200.0, 0.0))],
    "flat and empty": [(0.01, lambda t: 0 * t), (0.05, sine(5.5, 30.0)), (0.5, lambda t: 0 * t)],
}


@pytest.mark.parametrize("name", sorted(SCENES))
@pytest.mark.parametrize("noise_cents", [0.0, 2.0])
def test_numpy_measure_equals_the_torch_measure(name, noise_cents):
    deviation, note_index = voice(SCENES[name], noise_cents=noise_cents, seed=len(name))
    count = len(SCENES[name])
    numpy_extent = note_vibrato_extent(deviation, note_index, count)
    assert numpy_extent.dtype == np.float64 and numpy_extent.shape == (count,)
    np.testing.assert_allclose(numpy_extent, torch_extent(deviation, note_index, count), rtol=0, atol=TOLERANCE_CENTS)
    if name == "ramp" and noise_cents == 0.0:
        assert np.abs(numpy_extent).max() < 0.01  # a trend, not vibrato


def test_the_gate_ramps_are_exercised():
    """The scenes above put notes inside each of the gate's ramps (duration, rate, cycles), not only at 0 or 1."""
    for name, ramp in (("lengths", "duration"), ("rate limits", "rate"), ("few cycles", "cycles")):
        deviation, note_index = voice(SCENES[name])
        position, in_note, frames = vibrato_numpy._note_frames(note_index, len(SCENES[name]))
        mask = vibrato_numpy.vibrato_frames(deviation[position], in_note, frames)
        _, rate = vibrato_numpy._vibrato_of_blocks(deviation[position], mask, FR)
        gate = vibrato_numpy.vibrato_gate(rate, frames / FR, mask.sum(-1) / FR)
        assert ((gate > 0.01) & (gate < 0.99)).any(), ramp


@pytest.mark.parametrize("seed", range(6))
def test_random_bends_with_gaps_match(seed):
    """Random voices: notes of 0.1-3 s, random rate, extent, delay, drift, head transition, glitch and noise."""
    rng = np.random.default_rng(seed)
    notes = []
    for _ in range(30):
        rate, extent, delay = rng.uniform(2.0, 10.0), rng.uniform(0.0, 60.0), rng.uniform(0.0, 0.5) * rng.integers(2)
        drift, jump = rng.uniform(-300, 300) * rng.integers(2), rng.integers(0, 40) * rng.integers(2)

        def cents(t, rate=rate, extent=extent, delay=delay, drift=drift, jump=jump, glitch=rng.uniform()):
            out = sine(rate, extent, delay)(t) + drift * t
            out[:jump] -= 200.0
            if glitch < 0.2:
                out[int(glitch * 5 * len(t))] += 1200.0
            return out
        notes.append((rng.uniform(0.1, 3.0), cents))
    deviation, note_index = voice(notes, gap_s=rng.uniform(0.0, 0.2), noise_cents=rng.uniform(0.0, 5.0), seed=seed)
    expected = torch_extent(deviation, note_index, len(notes))
    assert (expected > 0).sum() > 10
    np.testing.assert_allclose(note_vibrato_extent(deviation, note_index, len(notes)), expected,
                               rtol=0, atol=TOLERANCE_CENTS)


def test_several_groups_match(monkeypatch):
    """With small groups (the torch measure cuts each group's block to its longest note) the results still agree."""
    monkeypatch.setattr(vibrato_torch, "VIBRATO_CHUNK_ELEMENTS", 600)
    monkeypatch.setattr(vibrato_numpy, "VIBRATO_CHUNK_ELEMENTS", 600)
    notes = [(s, sine(5.0 + 0.1 * i, 10.0 + i)) for i, s in enumerate(np.linspace(0.15, 2.0, 24))]
    deviation, note_index = voice(notes, noise_cents=3.0)
    np.testing.assert_allclose(note_vibrato_extent(deviation, note_index, len(notes)),
                               torch_extent(deviation, note_index, len(notes)), rtol=0, atol=TOLERANCE_CENTS)


def test_notes_without_frames_and_out_of_range_indices_read_zero():
    deviation, note_index = voice([(1.0, sine(6.0, 30.0))])
    note_index[note_index == -1] = 7  # not a note of 0 .. count - 1: a rest, as for NoteFrames
    extent = note_vibrato_extent(deviation, note_index, 3)
    np.testing.assert_allclose(extent, torch_extent(deviation, note_index, 3), rtol=0, atol=TOLERANCE_CENTS)
    assert extent[0] > 20.0 and extent[1] == extent[2] == 0.0
    assert note_vibrato_extent(deviation, note_index, 0).shape == (0,)


def test_a_6_hz_40_cent_bend_reads_40_cents():
    deviation, note_index = voice([(4.0, sine(6.0, 40.0))])
    assert note_vibrato_extent(deviation, note_index, 1)[0] == pytest.approx(40.0, abs=1.0)


def test_bend_vibrato_extent_does_not_import_torch():
    code = """
import sys
import numpy as np
from mididdsp.controllers import bend_vibrato_extent
from mididdsp.score import Note
t = np.arange(1000) / 250
extent = bend_vibrato_extent(np.where(t > 1.0, 0.4 * np.sin(2 * np.pi * 6.0 * t), 0.0), [Note(1.0, 3.9, 60, 80)])
assert abs(extent[0] - 40.0) < 1.0, extent
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
