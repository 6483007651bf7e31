"""mididdsp.audio: reading, resampling, validation and atomic writing, on tiny files made here."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from mididdsp.audio import AudioInfo, audio_info, float_wav_bytes, load_audio, resample, save_audio
from mididdsp.errors import InputFileError, MididdspError


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


@pytest.mark.parametrize("ext", [".wav", ".flac", ".aiff"])
def test_lossless_round_trip(tmp_path, ext):
    x = sine(440, 0.25, 16000)
    path = tmp_path / f"tone{ext}"
    save_audio(path, x)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1.0 / 32768 + 1e-6)  # 16-bit PCM quantization


def test_float_wav_bytes_read_back_exactly_with_no_time_stamp():
    import io

    import scipy.io.wavfile

    audio = np.random.default_rng(0).uniform(-1, 1, 1001).astype(np.float32)
    data = float_wav_bytes(audio, 22050)
    rate, read = scipy.io.wavfile.read(io.BytesIO(data))
    assert rate == 22050 and read.dtype == np.float32 and np.array_equal(read, audio)
    read, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 22050 and np.array_equal(read, audio)
    # libsndfile's float WAV holds the time of writing (its PEAK chunk); these hold the header and the samples only
    assert len(data) == 58 + 4 * len(audio) and b"PEAK" not in data[:58]


def test_ogg_round_trip_keeps_pitch_and_level(tmp_path):
    x = sine(440, 0.5, 16000)
    save_audio(tmp_path / "tone.ogg", x)
    y = load_audio(tmp_path / "tone.ogg")
    assert abs(len(y) - len(x)) <= 64
    assert abs(peak_hz(y, 16000) - 440) < 3
    rms_x, rms_y = np.sqrt(np.mean(x**2)), np.sqrt(np.mean(y[:len(x)] ** 2))
    assert abs(20 * np.log10(rms_y / rms_x)) < 0.5


def test_stereo_is_averaged_and_resampled(tmp_path):
    sr = 44100
    left, right = sine(1000, 0.5, sr, 0.6), sine(1000, 0.5, sr, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    info = audio_info(path)
    assert info == AudioInfo(sample_rate=sr, channels=2, frames=len(left), duration_s=len(left) / sr, format="WAV")
    y = load_audio(path, sample_rate=16000)
    assert len(y) == round(len(left) * 16000 / sr)
    expected = sine(1000, 0.5, 16000, 0.4)  # mean of 0.6 and 0.2 amplitude, same phase
    core = slice(400, len(y) - 400)  # away from the resampler's edge transients
    np.testing.assert_allclose(y[core], expected[core], atol=2e-3)


def test_resample_matches_analytic_sine_and_shapes():
    x = sine(300, 0.2, 48000)
    y = resample(x, 48000, 16000)
    assert y.dtype == np.float32 and y.shape == (len(x) // 3,)
    np.testing.assert_allclose(y[200:-200], sine(300, 0.2, 16000)[200:-200], atol=1e-3)
    two = resample(np.stack([x, -x]), 48000, 16000)
    assert two.shape == (2, len(x) // 3)
    np.testing.assert_allclose(two[0], -two[1], atol=1e-6)
    assert resample(x, 16000, 16000) is not None and resample(x, 16000, 16000).shape == x.shape


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(InputFileError, match="nope.wav"):
        audio_info(tmp_path / "nope.wav")


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(InputFileError, match=r"notes\.wav: not a readable audio file"):
        load_audio(path)
    with pytest.raises(InputFileError, match="not a readable audio file"):
        audio_info(path)


def test_empty_file_and_zero_samples(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        load_audio(empty)
    header_only = tmp_path / "zero.wav"
    sf.write(header_only, np.zeros(0, np.float32), 16000)
    with pytest.raises(InputFileError, match="no samples"):
        load_audio(header_only)
    with pytest.raises(InputFileError, match="no samples"):
        audio_info(header_only)


def test_nan_samples(tmp_path):
    x = sine(440, 0.1, 16000)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(InputFileError, match="NaN"):
        load_audio(path)


def test_shorter_than_one_frame(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, sine(440, 1.0, 16000)[:40], 16000)
    with pytest.raises(InputFileError, match="shorter than one frame"):
        load_audio(path)
    sf.write(path, sine(440, 1.0, 16000)[:64], 16000)  # exactly one frame is fine
    assert load_audio(path).shape == (64,)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(InputFileError, match="directory"):
        load_audio(tmp_path)


def test_silent_audio_is_legal_but_reported(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    with pytest.warns(UserWarning, match="silent"):
        y = load_audio(path)
    assert y.shape == (1600,) and not y.any()


def test_save_torch_batch_clips_and_creates_dirs(tmp_path):
    x = torch.tensor(sine(200, 0.1, 16000, amp=1.5))[None]  # [1, samples], peaks beyond full scale
    path = tmp_path / "a" / "b" / "out.wav"
    with pytest.warns(UserWarning, match="clipped"):
        save_audio(path, x)
    y, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and y.shape == (x.shape[1],)
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.99
    assert os.listdir(path.parent) == ["out.wav"]  # no temporary file left behind


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "keep.wav"
    save_audio(path, sine(440, 0.1, 16000))
    before = path.read_bytes()

    def failing_write(file, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"RIFF half")  # a partial file, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_audio(path, sine(880, 0.1, 16000))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.wav"]


def test_save_rejects_unknown_extension(tmp_path):
    with pytest.raises(MididdspError, match="unsupported output extension"):
        save_audio(tmp_path / "out.xyz", np.zeros(100, np.float32))


def test_save_in_range_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_audio(tmp_path / "ok.flac", sine(440, 0.05, 16000, amp=0.9))
    assert audio_info(tmp_path / "ok.flac").format == "FLAC"
