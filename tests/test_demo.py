"""`mididdsp demo` through the CLI entry point: the DSP-only phrase, and the default timbre transfer of the bundled
example with the shipped autoencoder (when it is installed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mididdsp import demo
from mididdsp.cli import main
from mididdsp.render import PRETRAINED_MIDI
from mididdsp.resynth import DEFAULT_MODEL

MIN_RMS_DB = -40.0  # dBFS; both demos measure about -19 (DSP) and -29 (timbre transfer)


def rms_db(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-12))


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    info = sf.info(path)
    assert info.format == "WAV" and info.channels == 1
    audio, sample_rate = sf.read(path, dtype="float32")
    return audio, sample_rate


def frame_levels_db(audio: np.ndarray, frame: int = 1600) -> np.ndarray:
    usable = audio[: len(audio) // frame * frame].astype(np.float64).reshape(-1, frame)
    return 10 * np.log10(np.mean(usable ** 2, axis=1) + 1e-10)


def test_dsp_demo_writes_a_non_silent_16k_wav(tmp_path: Path) -> None:
    out = tmp_path / "dsp.wav"
    assert main(["demo", "--dsp", "-o", str(out)]) == 0
    audio, sample_rate = read_wav(out)
    assert sample_rate == 16000
    assert len(audio) == int((demo.DEMO_NOTES[-1][1] + 1.0) * 16000)
    assert np.isfinite(audio).all()
    assert rms_db(audio) > MIN_RMS_DB and np.max(np.abs(audio)) <= 1.0
    # The phrase is there: sound during the notes, the last note's release and reverb dying away after it.
    levels = frame_levels_db(audio)  # 0.1 s frames
    assert levels[5:45].min() > levels.max() - 40  # 0.5-4.5 s: inside the phrase
    assert levels[-1] < levels[5:45].mean() - 20   # 5.7-5.8 s: 0.9 s after the last note ended


@pytest.mark.skipif(not (DEFAULT_MODEL / "config.yaml").is_file(),
                    reason=f"no shipped autoencoder at {DEFAULT_MODEL} (make model-autoencoder)")
def test_resynth_demo_timbre_transfer_writes_the_example_length(tmp_path: Path) -> None:
    out = tmp_path / "transfer.wav"
    assert main(["demo", "--resynth", "-o", str(out)]) == 0
    audio, sample_rate = read_wav(out)
    example, example_rate = sf.read(demo.EXAMPLE, dtype="float32")
    assert sample_rate == example_rate == 16000
    assert len(audio) == len(example)
    assert np.isfinite(audio).all() and rms_db(audio) > MIN_RMS_DB
    assert not np.allclose(audio, example, atol=1e-3)  # resynthesized, not a copy of the input
    # The phrase of the example is kept: the output's level follows the input's over time.
    assert np.corrcoef(frame_levels_db(audio), frame_levels_db(example))[0, 1] > 0.6


@pytest.mark.skipif(not (PRETRAINED_MIDI / "generator").is_dir(),
                    reason=f"no shipped MIDI model at {PRETRAINED_MIDI} (make model-midi)")
def test_default_demo_renders_the_bundled_midi(tmp_path: Path) -> None:
    """`make demo`: the bundled MIDI (three tracks, 19.8 s of notes) rendered with the shipped MIDI model."""
    from mididdsp.render import TAIL_S
    from mididdsp.score import read_midi

    out = tmp_path / "demo.wav"
    assert main(["demo", "-o", str(out)]) == 0
    audio, sample_rate = read_wav(out)
    score = read_midi(demo.DEMO_MIDI)
    assert sample_rate == 16000 and len(audio) == int(np.ceil((score.duration + TAIL_S) * 16000))
    assert np.isfinite(audio).all() and rms_db(audio) > MIN_RMS_DB and np.abs(audio).max() <= 0.99 + 1e-4
    levels = frame_levels_db(audio)  # 0.1 s frames: music from the first note to the last
    assert levels[2:int(score.duration * 10) - 2].min() > levels.max() - 45
