"""Picture of an extraction: piano roll with f0, loudness, and the six per-note controls, to PNG.

matplotlib (Agg backend, no display needed) is imported only when a plot is drawn.
"""
from __future__ import annotations

import os

import numpy as np

from mididdsp.dsp.constants import FRAME_RATE
from mididdsp.expression.controls import CONTROL_NAMES
from mididdsp.fileio import atomic_path


def plot_expression(path: str | os.PathLike, extraction, confidence_threshold: float = 0.5) -> None:
    """Draw ``extraction`` (a :class:`mididdsp.expression.extract.Extraction`) to the PNG ``path``, atomically.

    Panels, sharing a time axis in seconds: notes as boxes (one colour per track and voice) with the f0 in MIDI
    pitch where CREPE is confident; the loudness in dB; one panel per control, each note's value (0..1) drawn as
    a bar across the note.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, features = extraction.table, extraction.features
    f0 = np.asarray(features["f0_hz"], dtype=np.float64)
    confidence = np.asarray(features["confidence"], dtype=np.float64)
    loudness = np.asarray(features["loudness_db"], dtype=np.float64)
    time = np.arange(len(f0)) / FRAME_RATE
    midi = np.where(confidence >= confidence_threshold, 12.0 * np.log2(np.maximum(f0, 1e-3) / 440.0) + 69.0, np.nan)

    figure, axes = plt.subplots(2 + len(CONTROL_NAMES), 1, sharex=True, figsize=(12, 12),
                                gridspec_kw={"height_ratios": [4, 1.5] + [1] * len(CONTROL_NAMES)})
    roll, level = axes[0], axes[1]
    colours = plt.get_cmap("tab10")
    voice_keys = sorted({(int(t), int(v)) for t, v in zip(table.track, table.voice)})
    colour_of = {key: colours(i % 10) for i, key in enumerate(voice_keys)}
    for row in table:
        colour = colour_of[(row["track"], row["voice"])]
        roll.add_patch(plt.Rectangle((row["start"], row["pitch"] - 0.4), row["end"] - row["start"], 0.8,
                                     facecolor=colour, alpha=0.35, edgecolor=colour))
    roll.plot(time, midi, color="black", linewidth=0.8, label="f0 (voiced frames)")
    pitches = table.pitch
    if len(pitches):
        roll.set_ylim(pitches.min() - 3, pitches.max() + 3)
    roll.set_ylabel("MIDI pitch")
    roll.legend(loc="upper right", fontsize=8)
    level.plot(time, loudness, color="tab:gray", linewidth=0.8)
    level.set_ylabel("loudness\n(dB)")
    for axis, name in zip(axes[2:], CONTROL_NAMES):
        for row in table:
            colour = colour_of[(row["track"], row["voice"])]
            axis.plot([row["start"], row["end"]], [row[name], row[name]], color=colour, linewidth=2.5)
        axis.set_ylim(-0.05, 1.05)
        axis.set_ylabel(name.replace("_", "\n"), fontsize=8)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(0, max(time[-1] if len(time) else 0.0, float(table.end.max()) if len(table) else 0.0))
    figure.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as temp:
            figure.savefig(temp, dpi=100, format="png")
    finally:
        plt.close(figure)
