"""Harmonic and noise synthesis against closed-form and scipy oracles."""
import math

import numpy as np
import pytest
import scipy.signal
import torch

from mididdsp.dsp import (DDSPSynth, fft_convolve, filtered_noise, frequency_impulse_response, harmonic_synthesis,
                          n_frames)


def constant_frames(value, count, channels=None):
    shape = (1, count) if channels is None else (1, count, channels)
    return torch.full(shape, float(value))


def test_phase_of_a_3khz_tone_held_60s_drifts_less_than_a_tenth_of_a_cent():
    sample_rate, seconds, f0 = 16000, 60, 3000.0
    n_samples = sample_rate * seconds
    count = n_frames(n_samples)
    distribution = torch.zeros(1, count, 1) + 1.0
    audio = harmonic_synthesis(constant_frames(f0, count), constant_frames(1.0, count), distribution, n_samples)
    # Exact phase in float64: compare the last second with the ideal sine by least squares.
    last = np.arange(n_samples - sample_rate, n_samples)
    ideal_sin, ideal_cos = np.sin(2 * np.pi * f0 * last / sample_rate), np.cos(2 * np.pi * f0 * last / sample_rate)
    tail = audio[0, -sample_rate:].double().numpy()
    a, b = np.linalg.lstsq(np.stack([ideal_sin, ideal_cos], 1), tail, rcond=None)[0]
    phase_error_cycles = abs(math.atan2(b, a)) / (2 * math.pi)
    # A constant frequency error of c cents accumulates f0 * (2^(c/1200) - 1) * 60 s cycles of phase.
    drift_cents = 1200 * math.log2(1 + phase_error_cycles / (f0 * seconds))
    assert drift_cents < 0.1
    assert phase_error_cycles < 1e-4
    assert np.abs(tail - ideal_sin).max() < 1e-3


def test_harmonic_peaks_sit_within_1hz_of_multiples_of_f0():
    sample_rate, f0 = 16000, 220.5
    n_samples = 4 * sample_rate
    count = n_frames(n_samples)
    weights = 1.0 / torch.arange(1, 11, dtype=torch.float32)
    audio = harmonic_synthesis(constant_frames(f0, count), constant_frames(0.5, count),
                               weights.expand(1, count, 10).clone(), n_samples)[0].double().numpy()
    window = scipy.signal.get_window("blackmanharris", n_samples)
    n_fft = 8 * n_samples
    spectrum = np.abs(np.fft.rfft(audio * window, n_fft))
    bin_hz = sample_rate / n_fft
    for k in range(1, 11):
        expected = k * f0
        lo, hi = int((expected - 20) / bin_hz), int((expected + 20) / bin_hz)
        peak = lo + int(np.argmax(spectrum[lo:hi]))
        assert abs(peak * bin_hz - expected) < 1.0, (k, peak * bin_hz)
    # Relative levels follow the distribution (1/k weights): harmonic 2 is 6 dB below harmonic 1.
    level = lambda k: spectrum[int(round(k * f0 / bin_hz))]
    assert 20 * np.log10(level(1) / level(2)) == pytest.approx(6.02, abs=0.2)


def _out_of_partial_energy_db(audio, f0_track, sample_rate, n_harmonics, n_fft=1024, hop=256):
    """Worst frame ratio (dB) of energy away from every partial below Nyquist to the total energy."""
    guard_hz = max(120.0, 5 * sample_rate / n_fft)  # wider than the Blackman-Harris main lobe (4 bins)
    window = scipy.signal.get_window("blackmanharris", n_fft)
    nyquist = sample_rate / 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    worst = -np.inf
    for start in range(0, len(audio) - n_fft, hop):
        power = np.abs(np.fft.rfft(audio[start:start + n_fft] * window)) ** 2
        f0_lo, f0_hi = f0_track[start:start + n_fft].min(), f0_track[start:start + n_fft].max()
        allowed = np.zeros_like(freqs, dtype=bool)
        for k in range(1, n_harmonics + 1):
            if k * f0_lo < nyquist:
                allowed |= (freqs > k * f0_lo - guard_hz) & (freqs < min(k * f0_hi, nyquist) + guard_hz)
        worst = max(worst, 10 * np.log10(power[~allowed].sum() / power.sum() + 1e-30))
    return worst


def _raised_cosine_nyquist_gain(frequency, sample_rate, fade=0.05):
    nyquist = sample_rate / 2
    position = np.clip((nyquist - frequency) / (fade * nyquist), 0, 1)
    return np.where(frequency < nyquist, 0.5 - 0.5 * np.cos(np.pi * position), 0.0)


def _band_limited_glide(f0_frames, frame_amplitudes, sample_rate, hop, n_samples, upsampling, oversample=8, fade=0.05):
    """Float64 oracle: the tone harmonic_synthesis is specified to make, rendered at ``oversample`` times the rate
    as a continuous-time signal (same per-sample frequencies, phases and amplitudes at the output's sample
    instants), brick-wall band-limited to the output's Nyquist and decimated. It has no energy above Nyquist,
    so the output minus this reference is the aliased energy (plus rounding).

    Amplitude rule: frame values interpolated by ``upsampling``, except that a harmonic entering the fade band
    inside a segment is interpolated linearly there; times the per-sample raised-cosine Nyquist gain (none when
    ``fade`` is None: the naive tone, every harmonic at every frequency).
    """
    nyquist = sample_rate / 2
    n_fine = n_samples * oversample
    t = np.arange(n_fine) / oversample  # time in output samples
    segment = np.minimum((t // hop).astype(int), len(f0_frames) - 2)
    linear = t / hop - segment
    hann = np.sin(0.5 * np.pi * linear) ** 2
    f0_at = lambda when: np.interp(when / hop, np.arange(len(f0_frames)), f0_frames)
    # The synth's phase is a running sum of f0[n] / sr: the exact integral of f0 delayed by half a sample
    # (exact on linear pieces); sum it on the fine grid at the midpoints.
    phase = np.concatenate([[0.0], np.cumsum(f0_at(t + 0.5 / oversample - 0.5))[:-1]]) / (oversample * sample_rate)
    segment_max = f0_at(np.arange(n_samples)).reshape(-1, hop).max(1)[segment]
    f0 = f0_at(t)
    fine = np.zeros(n_fine)
    for k in range(1, frame_amplitudes.shape[1] + 1):
        in_fade_band = fade is not None and k * segment_max > (1 - fade) * nyquist
        weight = linear if upsampling == "linear" else np.where(in_fade_band, linear, hann)
        amplitude = frame_amplitudes[segment, k - 1] * (1 - weight) + frame_amplitudes[segment + 1, k - 1] * weight
        gain = 1.0 if fade is None else _raised_cosine_nyquist_gain(k * f0, sample_rate, fade)
        fine += amplitude * gain * np.sin(2 * np.pi * k * phase)
    taper = scipy.signal.windows.tukey(n_fine, 0.1)  # no wrap-around step for the brick-wall filter
    spectrum = np.fft.rfft(fine * taper)
    spectrum[n_samples // 2 + 1:] = 0
    return np.fft.irfft(spectrum, n_fine)[::oversample], taper[::oversample]


def _worst_frame_ratio_db(residual, reference, n_fft=1024, hop=256):
    return max(10 * np.log10(np.sum(residual[s:s + n_fft] ** 2) / np.sum(reference[s:s + n_fft] ** 2))
               for s in range(0, len(reference) - n_fft, hop))


@pytest.mark.parametrize("upsampling", ["hann", "linear"])  # "hann" is the default of every synth
@pytest.mark.parametrize("sample_rate,hop", [(4000, 16), (16000, 64), (44100, 147)])
def test_no_aliasing_when_harmonics_glide_through_nyquist_inside_a_frame(sample_rate, hop, upsampling):
    n_samples = sample_rate  # 1 s
    count = n_samples // hop + 1
    nyquist = sample_rate / 2
    n_harmonics = 8
    # The 3rd harmonic sweeps through Nyquist; frames are coarse, so the crossing happens inside frames.
    f0_frames = torch.linspace(0.29 * nyquist, 0.37 * nyquist, count)[None]
    distribution = torch.ones(1, count, n_harmonics)
    audio = harmonic_synthesis(f0_frames, torch.full((1, count), 0.5), distribution, n_samples, sample_rate, hop,
                               amplitude_upsampling=upsampling)[0].double().numpy()  # normalize=True (default)

    # Oracle: the band-limited float64 reference. Frame-wise, the aliased energy is below -80 dB (measured -85 /
    # -103 / -114 dB). The old Hann path, which Hann-interpolated the fading harmonic too, aliased at -71 / -68 /
    # -84 dB and fails this (-68 / -63 / -65 dB against this reference).
    f0_64 = f0_frames[0].double().numpy()
    gains = _raised_cosine_nyquist_gain(np.arange(1, n_harmonics + 1) * f0_64[:, None], sample_rate)
    frame_amplitudes = 0.5 * gains / gains.sum(1, keepdims=True)  # renormalised per frame below Nyquist
    reference, taper = _band_limited_glide(f0_64, frame_amplitudes, sample_rate, hop, n_samples, upsampling)
    assert _worst_frame_ratio_db(audio * taper - reference, reference) < -80

    # Energy away from every partial. With Hann upsampling the per-frame renormalisation (partials 1 and 2 rise
    # from 1/3 to 1/2 while partial 3 fades) becomes a frame-rate staircase whose sidebands, +-250 Hz around
    # partials 1 and 2, lie inside the band: the band-limited reference above has them too (-60 dB), so this
    # metric tests aliasing only with linear upsampling; the oracle above covers both.
    f0_samples = np.interp(np.arange(n_samples) / hop, np.arange(count), f0_64)
    if upsampling == "linear":
        assert _out_of_partial_energy_db(audio, f0_samples, sample_rate, n_harmonics) < -80

    # Both checks have teeth: the same glide synthesised naively (every harmonic, no mask) shows its aliases.
    phase = 2 * np.pi * (np.cumsum(f0_samples) - f0_samples) / sample_rate  # the synth's phase convention
    naive = sum(np.sin(k * phase) for k in range(1, n_harmonics + 1))
    assert _out_of_partial_energy_db(naive, f0_samples, sample_rate, n_harmonics) > -20
    naive_reference, _ = _band_limited_glide(f0_64, np.ones((count, n_harmonics)), sample_rate, hop, n_samples,
                                             upsampling, fade=None)
    assert _worst_frame_ratio_db(naive * taper - naive_reference, naive_reference) > -20


def test_fft_convolve_matches_scipy():
    generator = torch.Generator().manual_seed(1)
    signal, kernel = torch.randn(3, 1000, generator=generator), torch.randn(3, 77, generator=generator)
    ours = fft_convolve(signal.double(), kernel.double()).numpy()
    for row in range(3):
        np.testing.assert_allclose(ours[row], scipy.signal.fftconvolve(signal[row].double(), kernel[row].double()), atol=1e-10)


def test_flat_filter_passes_an_impulse_undelayed():
    n_samples = 64 * 20
    impulse = torch.zeros(1, n_samples)
    impulse[0, 333] = 1.0
    magnitudes = torch.ones(1, n_frames(n_samples), 65)
    out = filtered_noise(magnitudes, n_samples, noise=impulse)
    assert int(out.abs().argmax()) == 333
    torch.testing.assert_close(out, impulse, atol=1e-6, rtol=0)


def test_filtered_noise_overlap_adds_tails_without_block_seams():
    """Constant filter: the block-wise result must equal one convolution of the whole noise (scipy)."""
    n_samples = 64 * 50
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, n_samples, generator=generator, dtype=torch.float64) * 2 - 1
    bands = torch.linspace(1.0, 0.05, 65, dtype=torch.float64)
    magnitudes = bands.expand(1, n_frames(n_samples), 65)
    out = filtered_noise(magnitudes, n_samples, noise=noise)[0].numpy()
    impulse_response = frequency_impulse_response(bands).numpy()
    expected = scipy.signal.fftconvolve(noise[0].numpy(), impulse_response)[64:64 + n_samples]
    np.testing.assert_allclose(out, expected, atol=1e-9)


@pytest.mark.parametrize("taps", [128, 64])
def test_time_varying_noise_filter_equals_per_block_convolution(taps):
    """Block j is convolved (numpy) with the filter designed from the mean of frames j and j+1; tails overlap-add."""
    from mididdsp.dsp import filtered_noise_causal

    hop, segments, n_bands = 64, 12, 65
    generator = torch.Generator().manual_seed(3)
    magnitudes = torch.rand(1, segments + 1, n_bands, generator=generator, dtype=torch.float64)
    noise = torch.rand(1, segments * hop, generator=generator, dtype=torch.float64) * 2 - 1
    out = filtered_noise_causal(magnitudes, noise, hop, taps)[0].numpy()
    expected = np.zeros(segments * hop + taps - 1)
    for j in range(segments):
        design = frequency_impulse_response(0.5 * (magnitudes[0, j] + magnitudes[0, j + 1]), taps).numpy()
        expected[j * hop:j * hop + hop + taps - 1] += np.convolve(noise[0, j * hop:(j + 1) * hop].numpy(), design)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # Differentiable in the magnitudes (it is linear in them): autograd agrees with finite differences, also
    # after the filter map was first built under inference mode (as rendering does before training starts).
    from mididdsp.dsp import synths

    synths._FILTER_OPERATORS.clear()
    with torch.inference_mode():
        filtered_noise_causal(magnitudes, noise, hop, taps)
    small = magnitudes[:, :4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: filtered_noise_causal(m, noise[:, :3 * hop], hop, taps), (small,))


def test_noise_filters_are_symmetric_so_half_their_taps_design_them():
    """The render designs taps 0 .. taps / 2 only (dsp.kernels.noise_taps_operator) and mirrors the rest: the
    frequency-sampling design is linear phase, tap taps - t equal to tap t, for any magnitudes."""
    from mididdsp.dsp.kernels import noise_taps_operator

    magnitudes = torch.rand(5, 65, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    full = frequency_impulse_response(magnitudes).numpy()
    np.testing.assert_allclose(full[:, 1:], full[:, :0:-1], atol=1e-15)
    half = magnitudes.numpy() @ noise_taps_operator(65, 128).astype(np.float64)
    mirrored = np.concatenate([half, half[:, 1:-1][:, ::-1]], axis=1)
    np.testing.assert_allclose(mirrored, full, atol=1e-6)


def test_filtered_noise_follows_the_requested_magnitudes_within_1_5_db():
    sample_rate, n_samples = 16000, 16000 * 20
    band_hz = np.linspace(0, sample_rate / 2, 65)
    wanted_db = -25 * (band_hz / (sample_rate / 2)) + 6 * np.sin(2 * np.pi * band_hz / 4000)
    magnitudes = torch.tensor(10 ** (wanted_db / 20), dtype=torch.float32).expand(1, n_frames(n_samples), 65)
    generator = torch.Generator().manual_seed(0)
    out = filtered_noise(magnitudes, n_samples, generator=generator)[0].double().numpy()
    freqs, psd = scipy.signal.welch(out, sample_rate, nperseg=1024)
    white_psd = (1 / 3) / (sample_rate / 2)  # uniform noise in [-1, 1] has variance 1/3, spread over 0..Nyquist
    measured_db = 10 * np.log10(psd / white_psd)
    expected_db = np.interp(freqs, band_hz, wanted_db)
    inside = (freqs > 250) & (freqs < sample_rate / 2 - 250)
    assert np.abs(measured_db[inside] - expected_db[inside]).max() < 1.5


def test_chunked_render_equals_one_piece_render():
    torch.manual_seed(0)
    synth = DDSPSynth(reverb="learned", reverb_seconds=0.5)
    with torch.no_grad():
        synth.reverb.impulse_response.normal_(0, 1e-2)
    n_samples = 16000 * 6 + 37
    count = n_frames(n_samples)
    controls = {
        "f0_hz": 200 * 2 ** (torch.cumsum(torch.randn(1, count) * 0.01, 1)),
        "amplitude": torch.rand(1, count) * 0.3,
        "harmonic_distribution": torch.softmax(torch.randn(1, count, 60), -1),
        "noise_magnitudes": torch.rand(1, count, 65) * 0.02,
    }
    noise = torch.rand(1, n_samples) * 2 - 1
    with torch.no_grad():
        whole = synth.synthesize(controls, n_samples, noise=noise)["audio"]
    for chunk_seconds in (0.25, 1.0):
        chunked = synth.render(controls, n_samples, chunk_seconds=chunk_seconds, noise=noise)
        assert chunked.shape == whole.shape
        assert (chunked - whole).abs().max() < 1e-4


@pytest.mark.parametrize("sample_rate,hop", [(4000, 16), (16000, 64), (44100, 147)])
@pytest.mark.parametrize("upsampling", ["hann", "linear"])
def test_compiled_kernel_equals_the_tensor_code(sample_rate, hop, upsampling):
    """The numba render kernel (rotation recurrence) and the differentiable tensor code give the same audio."""
    generator = torch.Generator().manual_seed(0)
    count = sample_rate // hop + 1
    f0 = torch.stack([torch.linspace(0.05, 0.4, count) * sample_rate / 2, torch.linspace(100, 150, count)])
    amplitude = torch.rand(2, count, generator=generator)
    distribution = torch.rand(2, count, 60, generator=generator)
    initial_phase = torch.tensor([0.1, -0.3], dtype=torch.float64)
    results = [harmonic_synthesis(f0, amplitude, distribution, sample_rate - 5, sample_rate, hop, initial_phase,
                                  upsampling, return_final_phase=True, backend=backend)
               for backend in ("torch", "numba")]
    (torch_audio, torch_phase), (kernel_audio, kernel_phase) = results
    assert (torch_audio - kernel_audio).abs().max() < 1e-5
    assert (torch_phase - kernel_phase).abs().max() < 1e-9


def test_compiled_kernel_refuses_gradients():
    f0 = torch.full((1, 11), 200.0)
    amplitude = torch.full((1, 11), 0.5, requires_grad=True)
    with pytest.raises(RuntimeError, match="no gradient"):
        harmonic_synthesis(f0, amplitude, torch.ones(1, 11, 4), 640, backend="numba")
    # "auto" picks the differentiable code when a gradient is needed.
    harmonic_synthesis(f0, amplitude, torch.ones(1, 11, 4), 640).sum().backward()
    assert amplitude.grad is not None


def test_tensor_code_silences_harmonics_above_nyquist_per_item_without_normalisation():
    """Batch items with different f0: without normalisation the weights above Nyquist are not zero, so the
    tensor code must silence them item by item (the kernel does; a 3 kHz item's harmonics 3-8 used to leak)."""
    count = 251
    f0 = torch.stack([torch.full((count,), 3000.0), torch.full((count,), 200.0)])
    args = (f0, torch.full((2, count), 0.5), torch.ones(2, count, 8), 16000)
    results = [harmonic_synthesis(*args, normalize=False, backend=backend) for backend in ("torch", "numba")]
    assert (results[0] - results[1]).abs().max() < 1e-5
    single = harmonic_synthesis(f0[:1], args[1][:1], args[2][:1], 16000, normalize=False, backend="torch")
    assert (results[0][:1] - single).abs().max() < 1e-5


@pytest.mark.parametrize("sample_rate", [16000, 44100])
@pytest.mark.parametrize("upsampling", ["hann", "linear"])
def test_one_pass_dry_synthesis_equals_the_streaming_synthesizer(sample_rate, upsampling):
    """kernels.dry_synthesis (a render's runs) against the synthesizer's tensor code fed the same excitation: a
    glide that carries harmonics through Nyquist, noise filters that change every frame and fall silent for a
    stretch (the skipped segments), 1.3 s in all."""
    from mididdsp.dsp import kernels

    synth = DDSPSynth(n_harmonics=60, n_noise_bands=65, sample_rate=sample_rate, reverb=None)
    synth.harmonic.amplitude_upsampling = upsampling
    hop = synth.hop_size
    generator = torch.Generator().manual_seed(3)
    count = int(1.3 * sample_rate) // hop + 1
    controls = {"f0_hz": torch.linspace(180.0, 0.45 * sample_rate, count)[None],
                "amplitude": 0.1 + 0.5 * torch.rand(1, count, generator=generator),
                "harmonic_distribution": torch.rand(1, count, 60, generator=generator),
                "noise_magnitudes": 0.01 * torch.rand(1, count, 65, generator=generator)}
    controls["noise_magnitudes"][:, count // 3:count // 2] = 0.0
    n_samples = (count - 1) * hop
    excitation = torch.rand(1, n_samples, generator=generator) * 2 - 1
    reference = synth.render(controls, n_samples, reverb=False, noise=excitation)[0].double()
    ours = kernels.dry_synthesis(*(controls[name][0].numpy() for name in
                                   ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")),
                                 excitation[0].numpy(), hop, sample_rate, synth.harmonic.nyquist_fade, upsampling)
    error = torch.from_numpy(ours).double() - reference
    assert ours.shape == (n_samples,)
    assert 10 * torch.log10(error.pow(2).sum() / reference.pow(2).sum()) < -100
    # in chunks of 37 frames (the working memory's bound for long runs; the phase carried across): the same audio
    chunked = kernels.dry_synthesis(*(controls[name][0].numpy() for name in
                                      ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")),
                                    excitation[0].numpy(), hop, sample_rate, synth.harmonic.nyquist_fade,
                                    upsampling, chunk_frames=37)
    assert np.abs(chunked - ours).max() < 1e-6
    # the noise alone, through the same comparison: the silent stretch is silent in both
    silent_noise = {**controls, "amplitude": torch.zeros(1, count)}
    reference = synth.render(silent_noise, n_samples, reverb=False, noise=excitation)[0].double()
    ours = kernels.dry_synthesis(*(silent_noise[name][0].numpy() for name in
                                   ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")),
                                 excitation[0].numpy(), hop, sample_rate, synth.harmonic.nyquist_fade, upsampling)
    error = torch.from_numpy(ours).double() - reference
    assert 10 * torch.log10(error.pow(2).sum() / reference.pow(2).sum()) < -100
    quiet = slice((count // 3 + 2) * hop, (count // 2 - 3) * hop)  # clear of the filters' 64-sample reach
    assert np.all(ours[quiet] == 0.0)
