"""The project's sample and frame conventions, without torch (the render path imports only these and numpy).

Frames are "centred": frame ``i`` describes the instant ``i * hop_size`` samples, and a signal of ``n`` samples
has ``n // hop_size + 1`` frames (:func:`n_frames`).
"""
from __future__ import annotations

SAMPLE_RATE = 16000
FRAME_RATE = 250
HOP_SIZE = SAMPLE_RATE // FRAME_RATE  # 64 samples
DB_FLOOR = -80.0
NYQUIST_FADE = 0.05               # the harmonic synthesizer's fade below Nyquist (fraction of it)
AMPLITUDE_UPSAMPLING = "hann"     # frame amplitudes to samples: Hann-windowed overlap (or "linear")
CONTROL_NAMES = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")  # the synthesizer's controls


def hop_size_for(sample_rate: int = SAMPLE_RATE, frame_rate: int = FRAME_RATE) -> int:
    """Samples per frame; the frame rate must divide the sample rate exactly."""
    if sample_rate % frame_rate:
        raise ValueError(f"frame rate {frame_rate} Hz must divide the sample rate {sample_rate} Hz")
    return sample_rate // frame_rate


def n_frames(n_samples: int, hop_size: int = HOP_SIZE) -> int:
    """Number of centred frames for ``n_samples`` samples: ``n_samples // hop_size + 1``."""
    return int(n_samples) // int(hop_size) + 1


def fast_fft_size(n: int) -> int:
    """Smallest size >= n of the form 2^a * 3^b (the FFT backends are fast on such sizes)."""
    best = 1 << (int(n) - 1).bit_length()
    power3 = 1
    while power3 < best:
        candidate = power3 * (1 << max(0, (-(-int(n) // power3) - 1).bit_length()))
        best = min(best, candidate)
        power3 *= 3
    return best
