"""Differentiable DSP: pure tensor functions, synthesizer modules and spectral tools.

Shapes: audio [batch, samples]; frame signals [batch, frames, channels]; 16 kHz, 250 Hz centred frames
(``n_frames = n_samples // 64 + 1``), see :mod:`mididdsp.dsp.core`.
"""
from mididdsp.dsp.core import (DB_FLOOR, FRAME_RATE, HOP_SIZE, SAMPLE_RATE, amplitude_to_db, db_to_amplitude,
                               db_to_power, exp_sigmoid, fft_convolve, frequency_impulse_response, hz_to_midi,
                               midi_to_hz, n_frames, normalize_harmonic_distribution, nyquist_gain, power_to_db,
                               upsample_frames)
from mididdsp.dsp.effects import ExponentialDecayReverb, LearnedReverb, apply_reverb
from mididdsp.dsp.graph import CONTROL_NAMES, DDSPSynth, StreamingRenderer
from mididdsp.dsp.processors import FilteredNoiseSynth, HarmonicSynth
from mididdsp.dsp.spectral import (MultiScaleSpectralLoss, compute_loudness, log_mel_spectrogram, loudness_reference,
                                   magnitude_spectrogram, mel_filterbank, mfcc, multiscale_spectral_loss)
from mididdsp.dsp.synths import accumulate_phase, filtered_noise, filtered_noise_causal, harmonic_synthesis

__all__ = [
    "SAMPLE_RATE", "FRAME_RATE", "HOP_SIZE", "DB_FLOOR", "n_frames",
    "hz_to_midi", "midi_to_hz", "amplitude_to_db", "db_to_amplitude", "power_to_db", "db_to_power", "exp_sigmoid",
    "upsample_frames", "fft_convolve", "frequency_impulse_response", "nyquist_gain", "normalize_harmonic_distribution",
    "accumulate_phase", "harmonic_synthesis", "filtered_noise", "filtered_noise_causal",
    "apply_reverb", "LearnedReverb", "ExponentialDecayReverb",
    "HarmonicSynth", "FilteredNoiseSynth", "DDSPSynth", "StreamingRenderer", "CONTROL_NAMES",
    "magnitude_spectrogram", "compute_loudness", "loudness_reference", "mel_filterbank", "log_mel_spectrogram", "mfcc", "multiscale_spectral_loss", "MultiScaleSpectralLoss",
]
