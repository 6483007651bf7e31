"""Resynthesis: feature adjustments with known answers, chunked analysis, CLI errors."""
import math
import subprocess
import sys
from pathlib import Path

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
        (good, ["--model", tiny_model, "--loudness-passes", "-1"], "--loudness-passes"),
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


# --- a model with a known response ----------------------------------------------------------------------------------
# Its head ignores the GRU: the amplitude is whatever reads the input's loudness (loudness matching), all
# harmonic energy is in the fundamental, the noise is off (~1e-7) and the learned reverb is an audible 0.25 s
# decaying tail. So its output is a sine at the f0 it is given, with a level that we can predict.

DESIGNED_STATS = {"pitch_midi": {"mean": 81.0}, "loudness_db": {"mean": -20.0}}  # A5: a 220 Hz input moves +2 octaves


def designed_amplitude(loudness_db, f0_hz=220.0):
    """The designed model's amplitude: the sine at f0_hz that reads loudness_db (dsp.processors.match_loudness)."""
    from mididdsp.dsp.spectral import sinusoid_loudness_weight

    weight = sinusoid_loudness_weight(torch.tensor(float(f0_hz), dtype=torch.float64))
    return torch.sqrt(2.0 * torch.pow(10.0, torch.as_tensor(loudness_db, dtype=torch.float64) / 10.0) / weight)


@pytest.fixture(scope="module")
def designed_model(tmp_path_factory):
    torch.manual_seed(1)
    hidden, harmonics = 8, 20
    model = DDSPAutoencoder({"hidden_size": hidden, "reverb_seconds": 0.25, "n_harmonics": harmonics,
                             "n_noise_bands": 17, "instrument_embedding": 4})
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(-30.0)             # harmonics 2.. and every noise band: off
        model.head.bias[0] = 0.0                 # amplitude: follows the input's loudness (level by construction)
        model.head.bias[1] = 5.0                 # the fundamental
        taps = model.synth.reverb.impulse_response.shape[1]
        t = torch.arange(taps) / 16000
        model.synth.reverb.impulse_response.copy_(0.03 * torch.exp(-t / 0.05) * torch.randn(1, taps))
    directory = tmp_path_factory.mktemp("model") / "designed"
    save_model(model, directory, {"instruments": {"cello": 0}, "statistics": {"cello": DESIGNED_STATS}})
    return directory


def harmonic_tone(f0_hz=220.0, seconds=1.5, sample_rate=16000, amplitude=0.3):
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (sum(amplitude / k * np.sin(2 * np.pi * k * f0_hz * t) for k in range(1, 5))).astype(np.float32)


def peak_hz(audio, sample_rate=16000):
    audio = np.asarray(audio, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), 8 * len(audio)))
    return np.argmax(spectrum) * sample_rate / (8 * len(audio))


def rms(audio):
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def cli(*args):
    """`mididdsp resynth ...` in this process (the CLI's own entry point: parsing, errors, writing)."""
    from mididdsp.cli import main

    return main(["resynth", *map(str, args)])


# --- 1. --threshold ------------------------------------------------------------------------------------------------

def test_threshold_decides_which_frames_are_notes_for_quieting_and_adjustment():
    f0 = torch.full((100,), 220.0)                                   # MIDI 57; the instrument's mean is 76
    confidence = torch.cat([torch.full((50,), 0.7), torch.full((50,), 0.3)])
    loudness = torch.cat([torch.full((50,), -30.0), torch.full((50,), -10.0)])

    def run(threshold):
        return adjust_features(f0, confidence, loudness, ResynthOptions(threshold=threshold, quiet=12.0), STATS)

    low_f0, low = run(0.2)          # every frame a note: mean -20 dB = the instrument's, nothing quieted
    assert torch.allclose(low_f0, torch.full((100,), 880.0)) and torch.allclose(low, loudness)
    for threshold in (0.5, 0.7):    # only the 0.7 frames (>= is inclusive): their mean (-30) is moved to -20
        mid_f0, mid = run(threshold)
        assert torch.allclose(mid_f0, torch.full((100,), 880.0))
        assert torch.allclose(mid[:50], torch.full((50,), -20.0))
        assert torch.allclose(mid[50:], torch.full((50,), -10.0 + 10.0 - 12.0))  # moved too, then quieted
    high_f0, high = run(0.8)        # no notes: no adjustment at all, everything quieted
    assert torch.allclose(high_f0, f0) and torch.allclose(high, loudness - 12.0)


def test_cli_threshold_moves_the_quieted_part(designed_model, tmp_path, monkeypatch):
    import soundfile

    from mididdsp.dsp import compute_loudness, n_frames

    def fake_f0(audio, **kwargs):  # stands in for CREPE: 220 Hz, confidence 0.9 then 0.4
        frames = n_frames(len(audio))
        return torch.full((frames,), 220.0), torch.where(torch.arange(frames) < frames // 2, 0.9, 0.4)

    monkeypatch.setattr("mididdsp.pitch.compute_f0", fake_f0)
    audio = harmonic_tone(seconds=2.0)
    save_audio(tmp_path / "in.wav", audio)
    halves = {}
    for threshold in ("0.3", "0.6"):
        out = tmp_path / f"out_{threshold}.wav"
        assert cli(tmp_path / "in.wav", "-o", out, "--model", designed_model, "--threshold", threshold,
                   "--no-adjust", "--no-reverb") == 0
        output = soundfile.read(str(out), dtype="float32")[0]
        halves[threshold] = rms(output[3200:12800]), rms(output[19200:28800])  # 0.2 s clear of edges and switch
    level = compute_loudness(torch.as_tensor(audio))[25:-25].mean()
    quieted = float(designed_amplitude(level) / designed_amplitude(level - 20.0))  # --quiet default: 20 dB
    assert quieted == pytest.approx(10.0)  # the output level follows the input's: 20 dB quieter in, 20 out
    first, second = halves["0.3"]
    assert second / first == pytest.approx(1.0, rel=0.02)                # both halves are notes
    first_06, second_06 = halves["0.6"]
    assert first_06 == pytest.approx(first, rel=0.02)                      # the note half is untouched
    assert first_06 / second_06 == pytest.approx(quieted, rel=0.05)        # the 0.4 half is 20 dB quieter in


# --- 2. --no-reverb ------------------------------------------------------------------------------------------------

def test_reverb_adds_exactly_the_learned_tail_and_no_reverb_is_the_dry_synthesis(designed_model):
    """The network's controls as they are (no closed-loop loudness passes): the structure of the reverb path."""
    from scipy.signal import fftconvolve

    from mididdsp.dsp import compute_loudness
    from mididdsp.models import load_model
    from mididdsp.resynth import synthesize_from_features

    model = load_model(designed_model)
    frames, n = 376, 24000                                              # 1.5 s
    f0 = torch.linspace(300.0, 360.0, frames)
    loudness = torch.where(torch.arange(frames) < 250, -12.0, -80.0)     # 1 s of sound, then silence
    wet = synthesize_from_features(model, f0, loudness, n_samples=n, reverb=True, loudness_passes=0)
    dry = synthesize_from_features(model, f0, loudness, n_samples=n, reverb=False, loudness_passes=0)
    ids = torch.tensor([0])
    with torch.no_grad():
        one_pass = model(f0[None], loudness[None], instrument=ids, n_samples=n, reverb=False)["audio"][0].numpy()
        wet_pass = model(f0[None], loudness[None], instrument=ids, n_samples=n, reverb=True)
    assert np.abs(dry - one_pass).max() < 1e-4 * np.abs(one_pass).max()  # float32 rounding: measured 4e-5
    # The wet output is its own dry synthesis (matched through the reverb's gain) plus that convolved with the IR.
    wet_dry = wet_pass["dry"][0].numpy().astype(np.float64)
    assert np.abs(wet - wet_pass["audio"][0].numpy()).max() < 1e-4 * np.abs(wet).max()
    impulse_response = model.synth.reverb.get_impulse_response(ids)[0].detach().numpy()
    expected_wet = fftconvolve(wet_dry, impulse_response)[:n]
    assert np.abs((wet - wet_dry) - expected_wet).max() < 1e-5 * np.abs(expected_wet).max()  # measured 5e-7
    assert rms(wet[:16000] - wet_dry[:16000]) > 0.2 * rms(wet_dry[:16000])  # clearly audible
    # Both read the input's loudness once the reverb has filled: the level is matched to what is synthesised.
    for audio in (wet, dry):
        assert compute_loudness(torch.from_numpy(audio))[100:240].mean().item() == pytest.approx(-12.0, abs=0.5)
    tail = slice(int(1.05 * 16000), int(1.2 * 16000))                   # after the sound ends, within the IR
    assert rms(dry[tail]) < 1e-4 and rms(wet[tail]) > 3e-3


def test_cli_no_reverb_matches_the_in_process_dry_resynthesis(designed_model, tmp_path):
    import soundfile

    from mididdsp.models import load_model

    audio = np.concatenate([harmonic_tone(seconds=1.0), np.zeros(8000, np.float32)])
    save_audio(tmp_path / "in.wav", audio)
    for flag, out in (("--no-reverb", tmp_path / "dry.wav"), ("--no-adjust", tmp_path / "wet.wav")):
        assert cli(tmp_path / "in.wav", "-o", out, "--model", designed_model, "--no-adjust", flag) == 0
    dry, wet = (soundfile.read(str(tmp_path / name), dtype="float64")[0] for name in ("dry.wav", "wet.wav"))
    model = load_model(designed_model)
    want = resynthesize(audio, model, ResynthOptions(adjust=False, reverb=False))
    assert np.abs(dry - want).max() <= 1.5 / 32768                       # equal, to 16-bit rounding
    tail = slice(int(1.05 * 16000), int(1.2 * 16000))
    # Both are matched to the input's loudness, so they differ by the reverb's colour and tail: 20 % measured.
    assert rms(dry[tail]) < 1e-4 and rms(wet[tail]) > 3e-3 and rms(wet - dry) > 0.1 * rms(dry)


def test_cli_f0_refine_keeps_a_vibrato_at_its_size(designed_model, tmp_path):
    """The designed model plays its input f0: with --f0-refine, a 30-cent vibrato comes out at 30 cents; from
    CREPE's f0 alone it comes out smaller (CREPE reads it short)."""
    import soundfile

    from mididdsp.pitch import compute_f0, refine_f0

    t = np.arange(2 * 16000) / 16000
    f0 = 330.0 * 2 ** (30.0 * np.sin(2 * np.pi * 5.5 * t) / 1200)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    save_audio(tmp_path / "vibrato.wav", (0.3 * sum(np.sin(k * phase) / k for k in range(1, 5))).astype(np.float32))
    spread = {}
    for flags, name in (((), "plain"), (("--f0-refine",), "refined")):
        out = tmp_path / f"{name}.wav"
        assert cli(tmp_path / "vibrato.wav", "-o", out, "--model", designed_model, "--no-adjust", "--no-reverb",
                   *flags) == 0
        audio = soundfile.read(str(out), dtype="float32")[0]
        measured = refine_f0(audio, compute_f0(audio)[0]).numpy()[40:-40]
        spread[name] = np.std(1200 * np.log2(measured / 330.0))
    assert spread["refined"] == pytest.approx(30.0 / np.sqrt(2), rel=0.06)
    assert spread["plain"] < 0.93 * spread["refined"]


# --- 3. any rate and channel count; pitch options through the CLI --------------------------------------------------

def test_cli_stereo_44k_input_gives_mono_output_of_the_same_duration_at_the_adjusted_pitch(designed_model, tmp_path):
    import soundfile

    left = harmonic_tone(220.0, seconds=1.5, sample_rate=44100)
    save_audio(tmp_path / "stereo.wav", np.stack([left, 0.5 * left]), sample_rate=44100)
    assert soundfile.info(str(tmp_path / "stereo.wav")).channels == 2
    pitches = {}
    for name, extra in (("adjusted", []), ("plain", ["--no-adjust"]), ("up", ["--no-adjust", "--pitch-shift", "1"]),
                        ("adjusted_down", ["--pitch-shift", "-1"])):
        out = tmp_path / f"{name}.wav"
        assert cli(tmp_path / "stereo.wav", "-o", out, "--model", designed_model, *extra) == 0
        info = soundfile.info(str(out))
        assert (info.channels, info.samplerate, info.frames) == (1, 16000, 24000)  # 1.5 s
        pitches[name] = peak_hz(soundfile.read(str(out), dtype="float32")[0][1600:-1600])
    # MIDI 57 -> the instrument's mean 81 is two octaves up; --pitch-shift adds octaves after that.
    assert pitches == pytest.approx({"adjusted": 880.0, "plain": 220.0, "up": 440.0, "adjusted_down": 440.0},
                                    abs=1.5)


# --- 4. bad inputs -------------------------------------------------------------------------------------------------

def _nan_input(tmp_path, model):
    import soundfile

    audio = np.sin(np.arange(8000) * 0.1).astype(np.float32) * 0.3
    audio[4000] = np.nan
    soundfile.write(str(tmp_path / "nan.wav"), audio, 16000, subtype="FLOAT")
    return tmp_path / "nan.wav", model, ["nan.wav", "NaN"]


def _short_input(tmp_path, model):
    save_audio(tmp_path / "short.wav", np.full(40, 0.1, np.float32))  # 2.5 ms < one 4 ms frame
    return tmp_path / "short.wav", model, ["short.wav", "shorter than one frame"]


def _copy_model(tmp_path, model):
    import shutil

    return Path(shutil.copytree(model, tmp_path / "broken_model"))


def _truncated_weights(tmp_path, model):
    broken = _copy_model(tmp_path, model)
    data = (broken / "weights.pt").read_bytes()
    (broken / "weights.pt").write_bytes(data[:len(data) // 2])
    return None, broken, [str(broken / "weights.pt"), "corrupt, truncated or not a mididdsp weights file"]


def _bad_config(tmp_path, model):
    broken = _copy_model(tmp_path, model)
    (broken / "config.yaml").write_text("model: {hidden_size: 16\n  encoder: [none\n")
    return None, broken, [str(broken / "config.yaml"), "unreadable model config"]


@pytest.mark.parametrize("case", [_nan_input, _short_input, _truncated_weights, _bad_config],
                         ids=["nan", "short", "truncated_weights", "bad_config"])
def test_cli_bad_input_files_give_one_line_exit_1_and_no_output(case, tmp_path, tiny_model):
    good = tmp_path / "tone.wav"
    save_audio(good, np.sin(np.arange(8000) * 0.1).astype(np.float32) * 0.3)
    source, model, named = case(tmp_path, tiny_model)
    out = tmp_path / "out.wav"
    result = run_cli(source or good, "-o", out, "--model", model)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for text in named:
        assert text in lines[0], lines[0]
    assert "PyTorch" not in lines[0] and "weights_only" not in lines[0]
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []


def test_weights_of_another_model_are_reported_as_mismatched_not_corrupt(tmp_path, tiny_model):
    import shutil

    from mididdsp.errors import ModelError
    from mididdsp.models import load_model

    other = tmp_path / "other"
    save_model(DDSPAutoencoder({"hidden_size": 24, "reverb_seconds": 0.1, "n_instruments": 2}), other)
    shutil.copy(other / "weights.pt", tmp_path / "weights.pt")
    mixed = Path(shutil.copytree(tiny_model, tmp_path / "mixed"))
    shutil.copy(tmp_path / "weights.pt", mixed / "weights.pt")  # a readable state dict, but for hidden_size 24
    with pytest.raises(ModelError, match=r"mismatched weights.*config\.yaml.*another shape.*\[72, ") as error:
        load_model(mixed)
    message = str(error.value)
    assert str(mixed / "weights.pt") in message and "\n" not in message and "corrupt" not in message


# --- 5. chunked network + streamed synthesis ------------------------------------------------------------------------

def test_network_in_short_chunks_matches_one_whole_pass(tiny_model):
    from mididdsp.models import load_model
    from mididdsp.resynth import synthesize_from_features

    model = load_model(tiny_model)
    frames = 5 * 250 + 1                                                 # 5 s
    t = torch.arange(frames) / 250.0
    f0 = 220.0 * 2 ** (torch.sin(2 * math.pi * 0.3 * t) + 0.02 * torch.sin(2 * math.pi * 5 * t))
    loudness = -30.0 + 15.0 * torch.sin(2 * math.pi * 0.7 * t)
    whole = synthesize_from_features(model, f0, loudness, instrument=1, chunk_seconds=100.0, n_samples=80000)
    chunked = synthesize_from_features(model, f0, loudness, instrument=1, chunk_seconds=1.0, n_samples=80000)
    assert whole.shape == chunked.shape == (80000,) and rms(whole) > 1e-2
    # With 2 s of context on each side, the GRU state at every kept frame has forgotten where its piece began
    # (cut this GRU's input and its outputs differ by 0.17 at the cut, 3e-5 25 frames later, float rounding after
    # 50 frames = 0.2 s), and the noise is drawn from the same seeded generator in the same order. Measured:
    # 1.5e-7 of the peak; the bound leaves room for other BLAS/FFT rounding.
    assert np.abs(chunked - whole).max() < 1e-5 * np.abs(whole).max()


@pytest.mark.parametrize("encoder", ["none", "logmel"])
def test_a_6db_louder_input_gives_6db_more_amplitude_and_noise_whatever_the_weights(encoder):
    """Level by construction: the conditioning is relative to the recording's level and the output is matched to
    the measured loudness, so even an untrained network's output follows the input gain."""
    from mididdsp.dsp import compute_loudness

    torch.manual_seed(3)
    model = DDSPAutoencoder({"encoder": encoder, "hidden_size": 16, "conv_channels": 8, "n_mels": 16,
                             "bidirectional": encoder == "logmel", "reverb_seconds": 0.1}).eval()
    audio = torch.from_numpy(harmonic_tone(330.0, seconds=1.0) * np.linspace(0.2, 1.0, 16000, dtype=np.float32))
    f0 = torch.full((16000 // 64 + 1,), 330.0)
    gain = 10.0 ** (6.0 / 20.0)
    quiet = model.controls(f0, compute_loudness(audio), audio)
    loud = model.controls(f0, compute_loudness(audio * gain), audio * gain)
    sounding = compute_loudness(audio) > -70.0
    for name in ("amplitude", "noise_magnitudes"):
        ratio_db = 20.0 * torch.log10(loud[name][0][sounding] / quiet[name][0][sounding])
        assert ratio_db.mean().item() == pytest.approx(6.0, abs=0.1), name  # log-mel floor: 0.06 dB
        assert ratio_db.sub(6.0).abs().max().item() < 0.5, name


@pytest.mark.parametrize("which", ["autoencoder", "synthesis_coder"])
def test_shipped_models_follow_the_input_level(which):
    """Issue 13's check on the shipped models: a recording 6 dB louder gets 6 dB more amplitude (within 0.5 dB)."""
    from mididdsp.audio import load_audio
    from mididdsp.dsp import compute_loudness
    from mididdsp.models import load_model
    from mididdsp.resynth import PRETRAINED, analyse

    model = load_model(PRETRAINED / which)
    audio = torch.as_tensor(load_audio(Path(__file__).resolve().parents[1] / "mididdsp/data/example_trumpet.wav"))
    audio = audio[:16000 * 3]
    f0_hz = analyse(audio.numpy())[0]
    loudness = compute_loudness(audio)
    gain = 10.0 ** (6.0 / 20.0)
    quiet = model.controls(f0_hz, loudness, audio)["amplitude"][0]
    loud = model.controls(f0_hz, compute_loudness(audio * gain), audio * gain)["amplitude"][0]
    sounding = loudness > -60.0
    ratio_db = 20.0 * torch.log10(loud[sounding] / quiet[sounding])
    assert sounding.sum() > 200
    assert ratio_db.mean().item() == pytest.approx(6.0, abs=0.5)
    assert (ratio_db - 6.0).abs().quantile(0.95).item() < 0.5
