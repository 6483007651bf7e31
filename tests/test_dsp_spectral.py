"""Loudness, spectral loss and gradients through the whole synthesizer."""
import math

import numpy as np
import pytest
import torch

from mididdsp.dsp import (DDSPSynth, compute_loudness, exp_sigmoid, harmonic_synthesis, multiscale_spectral_loss,
                          n_frames)

SR = 16000


def sine(freq, amplitude=1.0, seconds=1.0):
    t = torch.arange(int(SR * seconds), dtype=torch.float32) / SR
    return (amplitude * torch.sin(2 * math.pi * freq * t))[None]


def steady(loudness):
    return loudness[0, 10:-10].mean().item()


def test_loudness_frames_follow_the_centred_convention():
    assert compute_loudness(torch.zeros(2, 6400)).shape == (2, n_frames(6400))
    assert compute_loudness(torch.zeros(2, 6401)).shape == (2, n_frames(6401))
    assert compute_loudness(torch.zeros(6400)).shape == (n_frames(6400),)


def test_a_sine_20db_down_reads_20db_lower():
    assert steady(compute_loudness(sine(1000))) - steady(compute_loudness(sine(1000, 0.1))) == pytest.approx(20, abs=0.5)


def test_full_scale_1khz_sine_reads_its_mean_square_level():
    assert steady(compute_loudness(sine(1000))) == pytest.approx(10 * math.log10(0.5), abs=0.1)


def test_a_weighting_makes_100hz_quieter_than_1khz_by_the_a_curve():
    difference = steady(compute_loudness(sine(1000))) - steady(compute_loudness(sine(100)))
    assert difference == pytest.approx(19.1, abs=1.0)  # A(100 Hz) = -19.1 dB


def test_loudness_adds_powers_not_decibels():
    """Two equal-power tones read 3 dB above one of them; averaging dB values would not."""
    one = steady(compute_loudness(sine(1000, 0.5)))
    both = steady(compute_loudness(sine(1000, 0.5) + sine(2500, 0.5 * 10 ** (-1.27 / 20))))  # A(2.5 kHz) = +1.27 dB
    assert both - one == pytest.approx(3.01, abs=0.3)


def test_silence_reads_the_floor():
    assert torch.all(compute_loudness(torch.zeros(1, 3200)) == -80.0)


def test_spectral_loss_is_zero_for_identical_and_grows_with_difference():
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 8000, generator=generator) * 0.1
    assert multiscale_spectral_loss(audio, audio).item() == pytest.approx(0.0, abs=1e-6)
    small = multiscale_spectral_loss(audio * 1.1, audio).item()
    large = multiscale_spectral_loss(audio * 2.0, audio).item()
    assert 0 < small < large
    # Pure gain g changes every log magnitude by log(g): the log term per scale is log(2) (minus eps effects).
    log_only = multiscale_spectral_loss(audio * 2.0, audio, fft_sizes=(256,), magnitude_weight=0.0).item()
    assert log_only == pytest.approx(math.log(2.0), rel=0.02)


def test_gradients_reach_every_control_and_are_finite():
    torch.manual_seed(0)
    synth = DDSPSynth(reverb="exponential", reverb_seconds=0.25)
    frames = n_frames(4000)
    outputs = {
        "f0_hz": torch.full((2, frames), 220.0, requires_grad=True),
        "amplitude": torch.randn(2, frames, 1, requires_grad=True),
        "harmonic_distribution": torch.randn(2, frames, 60, requires_grad=True),
        "noise_magnitudes": torch.randn(2, frames, 65, requires_grad=True),
    }
    result = synth(outputs, 4000)
    target = torch.randn(2, 4000) * 0.05
    multiscale_spectral_loss(result["audio"], target).backward()
    tensors = dict(outputs, reverb_gain=synth.reverb.gain, reverb_decay=synth.reverb.decay)
    for name, tensor in tensors.items():
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


def test_optimizing_amplitude_and_harmonics_against_a_target_tone_cuts_the_loss_by_90_percent():
    torch.manual_seed(0)
    n_samples, frames, f0 = 8000, n_frames(8000), 196.0
    f0_frames = torch.full((1, frames), f0)
    target_distribution = (1.0 / torch.arange(1, 41.0) ** 1.5).expand(1, frames, 40)
    target = harmonic_synthesis(f0_frames, torch.full((1, frames), 0.3), target_distribution, n_samples)

    amplitude_logit = torch.zeros(1, 1, 1, requires_grad=True)
    distribution_logit = torch.zeros(1, 1, 40, requires_grad=True)
    optimizer = torch.optim.Adam([amplitude_logit, distribution_logit], lr=0.05)

    def loss_now():
        amplitude = exp_sigmoid(amplitude_logit).expand(1, frames, 1)
        distribution = exp_sigmoid(distribution_logit).expand(1, frames, 40)
        audio = harmonic_synthesis(f0_frames, amplitude, distribution, n_samples)
        return multiscale_spectral_loss(audio, target)

    initial = loss_now().item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = loss_now()
        loss.backward()
        optimizer.step()
    assert loss_now().item() < 0.1 * initial


def test_loudness_reference_is_numpys_90th_percentile_of_the_sounding_frames_and_moves_with_gain():
    import numpy as np

    from mididdsp.dsp import loudness_reference

    generator = torch.Generator().manual_seed(0)
    loudness = -60.0 + 50.0 * torch.rand(2, 400, generator=generator)
    loudness[0, :150] = -80.0  # rests read the floor and do not count
    reference = loudness_reference(loudness)
    for row in range(2):
        sounding = loudness[row][loudness[row] > -79.0].numpy()
        assert reference[row].item() == pytest.approx(np.percentile(sounding, 90, method="nearest"), abs=0.2)
    louder = torch.where(loudness > -79.0, loudness + 6.0, loudness)  # a gain: silence stays at the floor
    assert torch.allclose(loudness_reference(louder) - reference, torch.full((2,), 6.0), atol=1e-4)
    assert loudness_reference(torch.full((50,), -80.0)).item() == -80.0


# --- loudness matching: what the analysis reads from controls, predicted without synthesising -------------------

@pytest.mark.parametrize("frequency_hz", [41.0, 97.0, 440.0, 1000.0, 3000.0, 7500.0])
def test_sinusoid_weight_predicts_the_loudness_of_a_sine(frequency_hz):
    from mididdsp.dsp.spectral import sinusoid_loudness_weight

    t = torch.arange(32000) / 16000
    sine = 0.5 * torch.sin(2 * math.pi * frequency_hz * t + 0.7)
    measured = compute_loudness(sine)[25:-25].mean()
    predicted = 10 * torch.log10(0.5 * 0.5 ** 2 * sinusoid_loudness_weight(torch.tensor(frequency_hz)))
    assert measured.item() == pytest.approx(predicted.item(), abs=0.02)


@pytest.mark.parametrize("with_reverb", [False, True])
def test_match_loudness_makes_the_synthesis_read_the_wanted_level(with_reverb):
    """Random steady timbres (harmonic + noise) at random levels, dry or through a coloured reverb that adds
    several dB: once the reverb has filled, the synthesis reads the level it was matched to."""
    from mididdsp.dsp import apply_reverb
    from mididdsp.dsp.core import normalize_harmonic_distribution
    from mididdsp.dsp.effects import reverb_power_gain
    from mididdsp.dsp.processors import match_loudness
    from mididdsp.dsp.synths import filtered_noise, harmonic_synthesis

    generator = torch.Generator().manual_seed(4)
    frames = 500
    taps = 4000  # 0.25 s: an exponentially decaying noise tail, low-passed so it colours the sound
    tail = torch.randn(1, taps, generator=generator) * torch.exp(-torch.arange(taps) / 800.0) * 0.3
    impulse_response = torch.nn.functional.pad(torch.cumsum(tail, -1)[:, 1:] * 0.1, (1, 0))
    filter_gain = reverb_power_gain(impulse_response, 16000) if with_reverb else None
    for f0, level in ((55.0, -35.0), (196.0, -20.0), (660.0, -12.0)):
        distribution = torch.rand(1, 1, 40, generator=generator).pow(3).expand(1, frames, 40)
        distribution = normalize_harmonic_distribution(distribution, torch.full((1, frames), f0))
        noise_shape = torch.rand(1, 1, 65, generator=generator).expand(1, frames, 65) * 0.02
        controls = {"f0_hz": torch.full((1, frames), f0), "amplitude": torch.full((1, frames), 0.1),
                    "harmonic_distribution": distribution, "noise_magnitudes": noise_shape}
        matched = match_loudness(controls, torch.full((1, frames), level), filter_gain=filter_gain)
        samples = (frames - 1) * 64
        audio = (harmonic_synthesis(matched["f0_hz"], matched["amplitude"], matched["harmonic_distribution"], samples)
                 + filtered_noise(matched["noise_magnitudes"], samples, generator=generator))
        if with_reverb:
            dry_db = compute_loudness(audio)[0, 300:-25].mean().item()
            audio = apply_reverb(audio, impulse_response)
            assert level - dry_db > 2.0, f0  # the reverb does carry level here, and matching allowed for it
        measured = compute_loudness(audio)[0, 300:-25].mean().item()
        # Partials closer than the window's main lobe (55 Hz) beat against each other: 0.2 dB of phase luck;
        # the reverb's response between its grid points: 0.3 dB more.
        assert measured == pytest.approx(level, abs=0.5 if with_reverb else 0.3), f0


def test_closed_loop_correction_makes_onsets_and_releases_read_the_wanted_loudness():
    """Three notes with 5 ms attacks, through a body-like reverb (10 ms decay, +3 dB): matching alone misses at
    onsets (a smoothed level is smoothed again) and while the reverb fills; two passes of measuring the render and
    correcting each frame's gain more than halve the error there, and steady frames stay right."""
    from mididdsp.dsp import DDSPSynth
    from mididdsp.dsp.core import normalize_harmonic_distribution
    from mididdsp.dsp.effects import reverb_power_gain
    from mididdsp.dsp.processors import match_loudness

    generator = torch.Generator().manual_seed(4)
    frames = 400
    samples = (frames - 1) * 64
    t = torch.arange(samples) / 16000
    gate, f0 = torch.zeros(samples), torch.full((1, frames), 220.0)
    steady, onsets = torch.zeros(1, frames, dtype=torch.bool), torch.zeros(1, frames, dtype=torch.bool)
    for start, stop, pitch, peak in ((0.1, 0.5, 220.0, 0.3), (0.7, 1.0, 330.0, 0.1), (1.05, 1.5, 147.0, 0.5)):
        gate += peak * (t - start).clamp(0, 0.005) / 0.005 * (1 - (t - stop).clamp(0, 0.04) / 0.04)
        first, last = int(start * 250), int(stop * 250)
        f0[0, first:last + 12] = pitch
        steady[0, first + 20:last - 5] = True
        onsets[0, first - 2:first + 10] = True
    phase = 2 * math.pi * torch.cumsum(torch.repeat_interleave(f0[0], 64)[:samples] / 16000, 0)
    level = compute_loudness(gate * (torch.sin(phase) + 0.3 * torch.sin(2 * phase)))[None]

    synth = DDSPSynth(n_harmonics=40, reverb="learned", reverb_seconds=0.25)
    synth.reverb.impulse_response.data = (torch.randn(1, 4000, generator=generator)
                                          * torch.exp(-torch.arange(4000) / 200.0) * 0.15)
    distribution = normalize_harmonic_distribution(
        torch.rand(1, 1, 40, generator=generator).pow(3).expand(1, frames, 40), f0)
    controls = {"f0_hz": f0, "amplitude": torch.full((1, frames), 0.1), "harmonic_distribution": distribution,
                "noise_magnitudes": torch.rand(1, 1, 65, generator=generator).expand(1, frames, 65) * 0.01}
    matched = match_loudness(controls, level, filter_gain=reverb_power_gain(synth.reverb.get_impulse_response(),
                                                                            16000))
    noise = torch.rand(1, samples + 256, generator=generator) * 2 - 1
    corrected = synth.correct_loudness(matched, level, samples, noise=noise, passes=2)

    def error(controls):
        return (compute_loudness(synth.render(controls, samples, noise=noise)) - level).abs()

    before, after = error(matched), error(corrected)
    sounding = level > -60
    assert after[sounding].mean() < 0.6 * before[sounding].mean()
    assert after[onsets & sounding].mean() < 0.7 * before[onsets & sounding].mean()
    assert after[steady].max() < 0.2
    silent = level <= -79
    assert torch.equal(corrected["amplitude"][silent], matched["amplitude"][silent])


def test_dry_at_wet_level_makes_the_dry_synthesis_read_what_the_wet_one_reads():
    """A body-like reverb that adds several dB and colours the partials: the rescaled dry synthesis of a held
    tone reads the wet synthesis's loudness (steady state, within 0.5 dB), the unscaled one does not."""
    from mididdsp.dsp import DDSPSynth
    from mididdsp.dsp.core import normalize_harmonic_distribution

    generator = torch.Generator().manual_seed(5)
    frames, samples = 500, 499 * 64
    synth = DDSPSynth(n_harmonics=40, reverb="learned", reverb_seconds=0.25)
    synth.reverb.impulse_response.data = (torch.randn(1, 4000, generator=generator)
                                          * torch.exp(-torch.arange(4000) / 200.0) * 0.3)
    f0 = torch.full((1, frames), 196.0)
    controls = {"f0_hz": f0, "amplitude": torch.full((1, frames), 0.1),
                "harmonic_distribution": normalize_harmonic_distribution(
                    torch.rand(1, 1, 40, generator=generator).pow(3).expand(1, frames, 40), f0),
                "noise_magnitudes": torch.rand(1, 1, 65, generator=generator).expand(1, frames, 65) * 0.01}
    noise = torch.rand(1, samples, generator=generator) * 2 - 1

    def level(controls, reverb):
        return compute_loudness(synth.render(controls, samples, reverb=reverb, noise=noise))[0, 300:-25].mean()

    wet, dry = level(controls, True), level(controls, False)
    assert wet - dry > 3.0
    assert level(synth.dry_at_wet_level(controls), False).item() == pytest.approx(wet.item(), abs=0.5)
