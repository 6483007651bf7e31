"""Resynthesis: feature adjustments with known answers, chunked analysis, CLI errors."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mididdsp.audio import save_audio
from mididdsp.dsp import hz_to_midi
from mididdsp.models import save_model
from mididdsp.resynth import ResynthOptions, adjust_features, analyse, resynthesize
from mididdsp.synthesis.autoencoder import DDSPAutoencoder

STATS = {"pitch_midi": {"mean": 76.0}, "loudness_db": {"mean": -20.0}}


def features(frames=100, f0=220.0, loudness=-30.0):
    confidence = torch.ones(frames)
    confidence[:10] = 0.0  # a few frames outside any note
    return torch.full((frames,), f0), confidence, torch.full((frames,), loudness)


def test_adjustment_moves_pitch_by_whole_octaves_and_loudness_to_the_instrument():
    f0, confidence, loudness = features(f0=220.0)  # MIDI 57; the instrument's mean is 76 -> +2 octaves is closest
    new_f0, new_loudness = adjust_features(f0, confidence, loudness, ResynthOptions(quiet=0.0), STATS)
    assert torch.allclose(new_f0[10:], torch.full((90,), 880.0))
    assert torch.allclose(new_loudness[10:], torch.full((90,), -20.0))


def test_user_shifts_autotune_and_quiet():
    f0, confidence, loudness = features(f0=440.0 * 2 ** (0.3 / 12))  # 30 cents sharp of A4
    options = ResynthOptions(adjust=False, pitch_shift=-1.0, loudness_shift=5.0, autotune=1.0, quiet=12.0)
    new_f0, new_loudness = adjust_features(f0, confidence, loudness, options, STATS)
    assert torch.allclose(new_f0[10:], torch.full((90,), 220.0), rtol=1e-5)
    assert torch.allclose(new_loudness[10:], torch.full((90,), -25.0))
    assert torch.allclose(new_loudness[:10], torch.full((10,), -37.0))  # outside notes: 12 dB quieter
    half = adjust_features(f0, confidence, loudness, ResynthOptions(adjust=False, autotune=0.5), None)[0]
    assert hz_to_midi(half[50]).item() == pytest.approx(69.15, abs=1e-3)


def test_chunked_analysis_matches_one_piece():
    t = np.arange(16000 * 3) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 330 * t + 2 * np.sin(2 * np.pi * 5 * t) * 0.1)).astype(np.float32)
    whole = analyse(audio, chunk_seconds=100)
    pieces = analyse(audio, chunk_seconds=0.7)
    assert whole[0].shape == pieces[0].shape == (audio.size // 64 + 1,)
    cents = 1200 * torch.log2(pieces[0][20:-20] / whole[0][20:-20]).abs()
    assert cents.max() < 1.0
    assert (pieces[2] - whole[2]).abs().max() < 1e-3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    model = DDSPAutoencoder({"hidden_size": 16, "reverb_seconds": 0.1, "n_instruments": 2})
    directory = tmp_path_factory.mktemp("model") / "tiny"
    save_model(model, directory, {"instruments": {"flute": 0, "violin": 1}, "statistics": {}})
    return directory


def test_resynthesis_keeps_length_and_plays_the_chosen_instrument(tiny_model):
    from mididdsp.models import load_model

    model = load_model(tiny_model)
    t = np.arange(16000 * 2) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio[16000:] = 0.0  # second half silent
    violin = resynthesize(audio, model, ResynthOptions(instrument="violin", chunk_seconds=0.5, reverb=False))
    assert violin.shape == audio.shape and np.isfinite(violin).all() and np.abs(violin).max() > 0
    flute = resynthesize(audio, model, ResynthOptions(instrument="flute", chunk_seconds=0.5, reverb=False))
    assert np.abs(flute - violin).max() > 1e-4  # the instrument embedding reaches the sound


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mididdsp", "resynth", *map(str, args)], capture_output=True, text=True)


def test_cli_rejects_bad_inputs_with_one_line_and_writes_nothing(tmp_path, tiny_model):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    good = tmp_path / "tone.wav"
    save_audio(good, np.sin(np.arange(8000) * 0.1).astype(np.float32) * 0.3)
    out = tmp_path / "out.wav"
    cases = [
        (not_audio, ["--model", tiny_model], "notes.wav"),
        (good, ["--model", tmp_path / "missing_model"], "missing_model"),
        (good, ["--model", tiny_model, "--instrument", "tuba"], "tuba"),
        (good, ["--model", tiny_model, "--autotune", "3"], "--autotune"),
    ]
    for source, extra, named in cases:
        result = run_cli(source, "-o", out, *extra)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], result.stderr
        assert not out.exists()
    result = run_cli(good, "-o", out, "--model", tiny_model, "--instrument", "violin", "--sample-rate", "22050")
    assert result.returncode == 0, result.stderr
    import soundfile
    info = soundfile.info(str(out))
    assert info.samplerate == 22050 and abs(info.frames - round(8000 * 22050 / 16000)) <= 1
