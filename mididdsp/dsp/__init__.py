"""Differentiable DSP: pure tensor functions, synthesizer modules and spectral tools.

Shapes: audio [batch, samples]; frame signals [batch, frames, channels]; 16 kHz, 250 Hz centred frames
(``n_frames = n_samples // 64 + 1``), see :mod:`mididdsp.dsp.core`.
"""
from mididdsp.dsp.constants import DB_FLOOR, FRAME_RATE, HOP_SIZE, SAMPLE_RATE, n_frames

# The rest is torch's, imported on first use (PEP 562): the render path reads the constants and the compiled
# kernels only, and a process that never trains or analyses never pays torch's import (about 1 s).
_LAZY = {
    "mididdsp.dsp.core": ("amplitude_to_db", "db_to_amplitude", "db_to_power", "exp_sigmoid", "fft_convolve",
                          "frequency_impulse_response", "hz_to_midi", "midi_to_hz", "normalize_harmonic_distribution",
                          "nyquist_gain", "power_to_db", "upsample_frames"),
    "mididdsp.dsp.effects": ("ExponentialDecayReverb", "LearnedReverb", "apply_reverb"),
    "mididdsp.dsp.graph": ("CONTROL_NAMES", "DDSPSynth", "StreamingRenderer"),
    "mididdsp.dsp.processors": ("FilteredNoiseSynth", "HarmonicSynth"),
    "mididdsp.dsp.spectral": ("MultiScaleSpectralLoss", "compute_loudness", "log_mel_spectrogram", "loudness_reference",
                              "magnitude_spectrogram", "mel_filterbank", "mfcc", "multiscale_spectral_loss"),
    "mididdsp.dsp.synths": ("accumulate_phase", "filtered_noise", "filtered_noise_causal", "harmonic_synthesis"),
}
_SOURCE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name in _SOURCE:
        import importlib

        value = getattr(importlib.import_module(_SOURCE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mididdsp.dsp' has no attribute {name!r}")


__all__ = [
    "SAMPLE_RATE", "FRAME_RATE", "HOP_SIZE", "DB_FLOOR", "n_frames",
    "hz_to_midi", "midi_to_hz", "amplitude_to_db", "db_to_amplitude", "power_to_db", "db_to_power", "exp_sigmoid",
    "upsample_frames", "fft_convolve", "frequency_impulse_response", "nyquist_gain", "normalize_harmonic_distribution",
    "accumulate_phase", "harmonic_synthesis", "filtered_noise", "filtered_noise_causal",
    "apply_reverb", "LearnedReverb", "ExponentialDecayReverb",
    "HarmonicSynth", "FilteredNoiseSynth", "DDSPSynth", "StreamingRenderer", "CONTROL_NAMES",
    "magnitude_spectrogram", "compute_loudness", "loudness_reference", "mel_filterbank", "log_mel_spectrogram", "mfcc", "multiscale_spectral_loss", "MultiScaleSpectralLoss",
]
