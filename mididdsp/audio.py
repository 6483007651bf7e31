"""Audio file I/O: reading (any rate, any channel count), resampling, validation and atomic writing.

soundfile (libsndfile) reads and writes WAV, FLAC, OGG/Vorbis and AIFF; soxr resamples (band-limited, 'HQ').
Every problem a user can cause with an input file is reported as one :class:`InputFileError` line naming
the file and saying what was expected. Outputs are never half-written: :func:`save_audio` writes a temporary
file in the destination directory and renames it into place.

Arrays here are numpy float32 with time on the LAST axis (``[samples]`` or ``[channels, samples]``),
matching the project's ``[batch, samples]`` tensor convention.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from mididdsp.dsp.constants import FRAME_RATE, SAMPLE_RATE
from mididdsp.errors import InputFileError, MididdspError
from mididdsp.fileio import atomic_path

# Output container and sample format by file extension (float input is written as 16-bit PCM / Vorbis).
_WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".aiff": ("AIFF", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"),
}

# Peak amplitude at or below which audio counts as silent (-120 dBFS).
_SILENT_PEAK = 1e-6


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file: rate in Hz, channel count, frames (samples per channel), seconds, format."""

    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputFileError(f"{path}: no such audio file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, expected an audio file (wav, flac, ogg, aiff)")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: file is empty, expected audio (wav, flac, ogg, aiff)")


def _open_error(path: Path, exc: Exception) -> InputFileError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputFileError(f"{path}: not a readable audio file (wav, flac, ogg, aiff expected): {reason}")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read only the header of an audio file.

    Raises InputFileError for a missing, empty or non-audio file, or one with zero samples.
    """
    path = Path(path)
    _check_readable(path)
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise _open_error(path, exc) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise InputFileError(f"{path}: audio file contains no samples")
    return AudioInfo(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        duration_s=info.frames / info.samplerate,
        format=str(info.format),
    )


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling with soxr ('HQ').

    audio: float array ``[samples]`` or ``[channels, samples]`` (time last) at ``orig_sr`` Hz.
    Returns float32 with the same leading shape and ``round(samples * target_sr / orig_sr)`` samples.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if int(orig_sr) <= 0 or int(target_sr) <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if int(orig_sr) == int(target_sr):
        return audio
    if audio.ndim == 1:
        return soxr.resample(audio, int(orig_sr), int(target_sr), quality="HQ").astype(np.float32, copy=False)
    if audio.ndim == 2:  # soxr wants [samples, channels]
        out = soxr.resample(np.ascontiguousarray(audio.T), int(orig_sr), int(target_sr), quality="HQ")
        return np.ascontiguousarray(out.T, dtype=np.float32)
    raise ValueError(f"resample expects [samples] or [channels, samples], got shape {audio.shape}")


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate`` Hz.

    Channels are averaged; the rate is converted with :func:`resample`. Returns ``[samples]``, full scale 1.0.
    Raises InputFileError naming the file for: a missing file, a file that is not audio, an empty file or one
    with zero samples, NaN/inf samples, and audio shorter than one frame (``sample_rate / 250`` samples).
    All-silent audio is legal; it is reported with ``warnings.warn``.
    """
    path = Path(path)
    _check_readable(path)
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # [samples, channels]
    except (RuntimeError, OSError, ValueError) as exc:
        raise _open_error(path, exc) from None
    if data.size == 0:
        raise InputFileError(f"{path}: audio file contains no samples")
    if not np.isfinite(data).all():
        raise InputFileError(f"{path}: audio contains NaN or infinite samples")
    mono = data.mean(axis=1, dtype=np.float32)
    audio = resample(mono, file_sr, sample_rate)
    min_samples = max(1, math.ceil(sample_rate / FRAME_RATE))
    if audio.shape[0] < min_samples:
        raise InputFileError(
            f"{path}: audio is {mono.shape[0] / file_sr * 1000:.2f} ms long, shorter than one frame "
            f"({1000 / FRAME_RATE:g} ms, {min_samples} samples at {sample_rate} Hz)"
        )
    if float(np.abs(audio).max()) <= _SILENT_PEAK:
        warnings.warn(f"{path}: audio is silent (peak below -120 dBFS)", stacklevel=2)
    return audio


def _as_numpy(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach"):  # a torch tensor; torch itself is not imported here
        audio = audio.detach().cpu().float().numpy()
    return np.asarray(audio)


def save_audio(path: str | os.PathLike, audio: Any, sample_rate: int = SAMPLE_RATE) -> None:
    """Write audio atomically; the format follows the extension (.wav/.flac/.aiff 16-bit PCM, .ogg Vorbis).

    audio: numpy array or torch tensor, ``[samples]``, ``[1, samples]`` or ``[channels, samples]``,
    full scale 1.0. Float samples beyond [-1, 1] are clipped with a warning. Parent directories are created;
    the file appears complete or not at all (temporary file in the same directory, then ``os.replace``).
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise MididdspError(f"{path}: unsupported output extension, expected one of {', '.join(_WRITE_FORMATS)}")
    data = _as_numpy(audio)
    if data.ndim == 1:
        data = data[:, None]
    elif data.ndim == 2 and data.shape[0] <= data.shape[1]:
        data = data.T  # [channels, samples] -> soundfile's [samples, channels]
    else:
        raise ValueError(f"save_audio expects [samples] or [channels, samples], got shape {data.shape}")
    if data.shape[0] == 0:
        raise ValueError(f"{path}: refusing to write audio with zero samples")
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise ValueError(f"{path}: audio to write contains NaN or infinite samples")
        peak = float(np.abs(data).max())
        if peak > 1.0:
            warnings.warn(f"{path}: audio clipped to [-1, 1] (peak {peak:.3f})", stacklevel=2)
            data = np.clip(data, -1.0, 1.0)
        data = data.astype(np.float32, copy=False)

    with atomic_path(path, suffix=path.suffix) as temp:
        sf.write(temp, data, int(sample_rate), format=fmt[0], subtype=fmt[1])


def float_wav_bytes(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A mono 32-bit float WAV file's bytes (RIFF, ``WAVE_FORMAT_IEEE_FLOAT``) of ``audio`` [samples].

    Written here rather than by libsndfile, which adds a PEAK chunk holding the time of writing: the same audio
    would give other bytes a second later (the editor's undo promises the same bytes back)."""
    import struct

    data = np.ascontiguousarray(audio, dtype="<f4").tobytes()
    n_samples = len(data) // 4
    fmt = struct.pack("<HHIIHHH", 3, 1, int(sample_rate), 4 * int(sample_rate), 4, 32, 0)  # cbSize 0
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, n_samples)
              + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
