"""The six per-note controls on control signals whose answers are known, built here as tensors."""
import math

import numpy as np
import pytest
import torch

from mididdsp.expression.controls import (CONTROL_NAMES, CONTROL_RANGES, PEAK_EDGE_FRAMES, PEAK_TOLERANCE_DB,
                                          PHYSICAL_OF, note_expression,
                                          scale_control, unscale_control)

FR = 250


def single_note(n_frames, amplitude_db=None, cents=None, pitch=69.0, rest=20):
    """Controls for one note of ``n_frames`` frames between ``rest`` rest frames on each side."""
    total = n_frames + 2 * rest
    note_index = torch.full((total,), -1)
    note_index[rest:rest + n_frames] = 0
    level = torch.full((total,), -50.0)
    if amplitude_db is not None:
        level[rest:rest + n_frames] = amplitude_db
    deviation = torch.zeros(total)
    if cents is not None:
        deviation[rest:rest + n_frames] = cents
    f0 = 440.0 * 2.0 ** ((pitch - 69.0) / 12.0) * 2.0 ** (deviation / 1200.0)
    return {"f0_hz": f0, "amplitude": 10.0 ** (level / 20.0)}, note_index, torch.tensor([pitch])


def test_level_ramp_gives_mean_std_and_peak_position():
    n = 300
    ramp = torch.linspace(-40.0, -20.0, n, dtype=torch.float64)
    controls, index, pitch = single_note(n, ramp.float())
    out = note_expression(controls, index, pitch)
    assert out["volume_db"][0].item() == pytest.approx(-30.0, abs=1e-3)
    assert out["volume_fluctuation_db"][0].item() == pytest.approx(float(np.std(ramp.numpy())), abs=1e-3)
    # The peak is the mean position of the frames within PEAK_TOLERANCE_DB of the maximum, searched without the
    # note's last PEAK_EDGE_FRAMES frames: the top of the ramp that ends that many frames before the note does.
    inner = ramp.numpy()[:n - PEAK_EDGE_FRAMES]
    top = np.flatnonzero(inner >= inner.max() - PEAK_TOLERANCE_DB)
    assert out["peak_position"][0].item() == pytest.approx(top.mean() / n, abs=1e-4)
    assert out["peak_position"][0].item() == pytest.approx(
        1.0 - (PEAK_EDGE_FRAMES + PEAK_TOLERANCE_DB / 20.0 * n / 2.0) / n, abs=2.0 / n)
    assert out["volume"][0].item() == pytest.approx(0.5, abs=1e-4)  # -30 dB on the -60..0 dB scale
    assert out["volume_fluctuation"][0].item() == pytest.approx(np.std(ramp.numpy()) / 12.0, abs=1e-4)
    # A swell peaking 30% into the note.
    swell = -30.0 - 10.0 * torch.abs(torch.arange(n) - 0.3 * n) / n
    out = note_expression(*single_note(n, swell))
    assert out["peak_position"][0].item() == pytest.approx(0.3, abs=1.0 / n)
    # A nearly flat note with 0.2 dB of flicker: the argmax would land anywhere; the peak sits mid-plateau.
    flicker = -30.0 + 0.2 * torch.rand(n, generator=torch.Generator().manual_seed(1))
    out = note_expression(*single_note(n, flicker))
    assert out["peak_position"][0].item() == pytest.approx(0.5, abs=0.05)


def test_peak_position_ignores_the_neighbours_level_at_the_edges():
    # A swell from -40 dB to a -30 dB peak at 60% of the note, after a louder note (-25 dB) whose level still
    # reads on the first 3 frames (its release, the analysis window): the peak is the swell's, not frame 0.
    n = 100
    position = torch.arange(n) / n
    swell = -30.0 - 10.0 * torch.abs(position - 0.6) / 0.6
    swell[:3] = -25.0
    swell[-2:] = -24.0  # the next note's attack leaking into the last frames
    out = note_expression(*single_note(n, swell))
    assert out["peak_position"][0].item() == pytest.approx(0.6, abs=2.0 / n)


@pytest.mark.parametrize("rate,extent,seconds,delay", [(5.5, 25.0, 1.2, 0.0), (6.3, 12.0, 0.8, 0.0),
                                                       (4.7, 40.0, 2.0, 0.5)])
def test_sinusoidal_vibrato_extent_and_rate(rate, extent, seconds, delay):
    n = int(seconds * FR)
    t = torch.arange(n) / FR
    cents = torch.where(t >= delay, extent * torch.sin(2 * math.pi * rate * (t - delay) + 0.7), torch.zeros(n))
    cents = cents + 3.0  # a constant tuning offset is not vibrato
    out = note_expression(*single_note(n, cents=cents, pitch=64.0))
    assert out["vibrato_extent_cents"][0].item() == pytest.approx(extent, abs=2.0)
    assert out["vibrato_rate_hz"][0].item() == pytest.approx(rate, abs=0.2)
    assert out["vibrato"][0].item() == pytest.approx(out["vibrato_extent_cents"][0].item() / 60.0, abs=1e-6)


def test_the_vibrato_a_pitch_bend_carries_is_measured_as_in_an_f0():
    """A 5.5 Hz, 30-cent bend vibrato on the second note reads 30 cents; a step, no bend and a slow ramp read 0."""
    import numpy as np

    from mididdsp.controllers import bend_vibrato_extent
    from mididdsp.score import Note

    t = np.arange(1200) / FR
    bend = np.where((t > 1.0) & (t < 2.5), 0.30 * np.sin(2 * np.pi * 5.5 * t), 0.0)
    bend += np.where((t > 0.5) & (t < 1.0), 1.0, 0.0)  # a step inside the first note
    bend += np.where(t > 3.0, 0.5 * (t - 3.0), 0.0)  # a slow ramp over the last
    notes = [Note(0.1, 0.95, 60, 80), Note(1.0, 2.5, 62, 80), Note(2.6, 2.9, 65, 80), Note(3.0, 4.5, 64, 80)]
    extent = bend_vibrato_extent(bend, notes)
    assert extent[1] == pytest.approx(30.0, abs=2.0)
    assert extent[0] == 0.0 and extent[2] == 0.0 and extent[3] < 0.01  # the ramp: a trend, float rounding


@pytest.mark.parametrize("transition_s", [0.05, 0.13])
def test_vibrato_ignores_a_legato_transition_from_the_previous_pitch(transition_s):
    # The first frames of a legato note still read the previous note, 2 semitones below (its release rings
    # under the onset), then glide up over 48 ms; the vibrato after it is 20 cents at 5.5 Hz. An octave error in
    # the middle of the note must not count either.
    n = int(0.45 * FR)
    t = torch.arange(n) / FR
    held = int(transition_s * FR)
    glide = 12
    cents = 20.0 * torch.sin(2 * math.pi * 5.5 * t)
    cents[:held] = -200.0
    cents[held:held + glide] = torch.linspace(-200.0, 0.0, glide)
    cents[n // 2 + 10] = -1200.0
    out = note_expression(*single_note(n, cents=cents, pitch=62.0))
    assert out["vibrato_rate_hz"][0].item() == pytest.approx(5.5, abs=0.3)
    assert out["vibrato_extent_cents"][0].item() == pytest.approx(20.0, abs=3.0)
    # The same note without vibrato reads none, transition or not.
    cents = torch.zeros(n)
    cents[:held] = -200.0
    cents[held:held + glide] = torch.linspace(-200.0, 0.0, glide)
    out = note_expression(*single_note(n, cents=cents, pitch=62.0))
    assert out["vibrato_extent_cents"][0].item() < 1.0


def test_vibrato_gates_short_notes_and_fast_wobble():
    short = int(0.15 * FR)
    t = torch.arange(short) / FR
    out = note_expression(*single_note(short, cents=30.0 * torch.sin(2 * math.pi * 6.0 * t)))
    assert out["vibrato_extent_cents"][0].item() == 0.0 and out["vibrato"][0].item() == 0.0
    n = FR
    t = torch.arange(n) / FR
    out = note_expression(*single_note(n, cents=30.0 * torch.sin(2 * math.pi * 12.0 * t)))
    assert out["vibrato_extent_cents"][0].item() == 0.0 and out["vibrato_rate_hz"][0].item() == 0.0
    out = note_expression(*single_note(n))  # steady pitch: no vibrato either
    assert out["vibrato_extent_cents"][0].item() < 1e-3


def test_vibrato_gate_is_continuous_around_the_published_limits():
    from mididdsp.expression.vibrato import vibrato_gate

    rate = torch.tensor([6.0, 3.0, 9.0, 2.4, 9.6, 8.0, 6.0, 6.0, 4.0])
    duration = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.14, 0.3, 0.25])  # last: exactly one cycle
    weight = vibrato_gate(rate, duration)
    assert weight.tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0, 0.0, 0.5, 0.0, 1.0, 0.5])
    # Continuous: a small change of rate near a limit changes the weight a little, never from 0 to 1.
    rates = torch.linspace(2.0, 10.0, 801)
    steps = vibrato_gate(rates, torch.ones_like(rates)).diff().abs()
    assert steps.max().item() <= 0.01 + 1e-6


def test_brightness_is_the_harmonic_centroid():
    controls, index, pitch = single_note(100, torch.full((100,), -20.0))
    total = index.shape[0]
    weights = torch.zeros(60)
    weights[:10] = 1.0 / torch.arange(1, 11)  # h_k ~ 1/k for k = 1..10
    controls["harmonic_distribution"] = (weights / weights.sum()).expand(total, 60)
    out = note_expression(controls, index, pitch)
    expected = 10.0 / float(sum(1.0 / k for k in range(1, 11)))
    assert out["brightness_centroid"][0].item() == pytest.approx(expected, rel=1e-5)
    assert out["brightness"][0].item() == pytest.approx((expected - 1.0) / 7.0, rel=1e-5)


def test_attack_noise_reads_the_onset_burst():
    controls, index, pitch = single_note(100, torch.full((100,), -20.0))
    noise_db = torch.full((index.shape[0],), -70.0)
    onset = int((index == 0).nonzero()[0])
    noise_db[onset:onset + 10] = -35.0  # 40 ms burst
    controls["noise_magnitudes"] = (10.0 ** (noise_db / 20.0)).unsqueeze(-1).expand(-1, 65)
    out = note_expression(controls, index, pitch)
    assert out["attack_noise_db"][0].item() == pytest.approx(-35.0, abs=1e-3)
    assert out["attack_noise"][0].item() == pytest.approx(45.0 / 50.0, abs=1e-4)


def reference_note(controls, index, pitch, row, note):
    """Slow per-note reference with numpy (volume, fluctuation, peak, brightness, attack)."""
    frames = np.flatnonzero(index[row].numpy() == note)
    level = 20 * np.log10(np.maximum(controls["amplitude"][row].double().numpy()[frames], 1e-4))
    level = np.maximum(level, -80.0)
    dist = controls["harmonic_distribution"][row].double().numpy()[frames]
    centroid = (dist * np.arange(1, dist.shape[1] + 1)).sum(-1) / dist.sum(-1)
    noise = np.maximum(20 * np.log10(controls["noise_magnitudes"][row].double().numpy()[frames[:10]]), -80.0)
    edge = PEAK_EDGE_FRAMES if len(frames) >= 2 * PEAK_EDGE_FRAMES + 2 else 0
    inner = level[edge:len(level) - edge]
    return {"volume_db": level.mean(), "volume_fluctuation_db": level.std(),
            "peak_position": (edge + np.flatnonzero(inner >= inner.max() - PEAK_TOLERANCE_DB).mean()) / len(frames),
            "brightness_centroid": centroid.mean(),
            "attack_noise_db": noise.mean(axis=-1).mean()}


def random_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch, frames = 2, 900
    index = torch.full((batch, frames), -1)
    lengths = [[40, 300, 7, 180], [250, 60, 400]]
    for row, notes in enumerate(lengths):
        position = 10
        for note, length in enumerate(notes):
            index[row, position:position + length] = note
            position += length + int(torch.randint(0, 30, (1,), generator=generator))
    t = torch.arange(frames) / FR
    controls = {"f0_hz": 300.0 * 2 ** (20 * torch.sin(2 * math.pi * 5.0 * t) / 1200).expand(batch, -1).clone(),
                "amplitude": torch.rand(batch, frames, generator=generator) * 0.5 + 0.01,
                "harmonic_distribution": torch.softmax(torch.randn(batch, frames, 60, generator=generator), -1),
                "noise_magnitudes": torch.rand(batch, frames, 65, generator=generator) * 0.1 + 1e-3}
    pitch = torch.tensor([[62.0, 62.0, 62.0, 62.0], [62.0, 62.0, 62.0, 0.0]])
    return controls, index, pitch, lengths


def test_vectorised_equals_per_note_reference():
    controls, index, pitch, lengths = random_batch()
    out = note_expression(controls, index, pitch, n_notes=4)
    for row, notes in enumerate(lengths):
        for note in range(len(notes)):
            expected = reference_note(controls, index, pitch, row, note)
            for name, value in expected.items():
                assert out[name][row, note].item() == pytest.approx(value, abs=2e-3), (row, note, name)
            # The note alone (its own rows, no padding from other notes) gives the same vibrato.
            alone = torch.where(index[row] == note, 0, -1)
            single = note_expression({k: v[row] for k, v in controls.items()}, alone, pitch[row, note:note + 1])
            for name in ("vibrato_extent_cents", "vibrato_rate_hz"):
                assert out[name][row, note].item() == pytest.approx(single[name][0].item(), abs=1e-3)
    assert out["present"].tolist() == [[True] * 4, [True, True, True, False]]
    assert out["volume"][1, 3].item() == 0.0


def test_differentiable_controls_have_gradients():
    controls, index, pitch, _ = random_batch(1)
    leaves = {key: value.clone().requires_grad_(key != "f0_hz") for key, value in controls.items()}
    out = note_expression(leaves, index, pitch, n_notes=4)
    # Physical values (the random spectra's centroid lies above brightness's range, where the scaled value clips).
    for name, source in (("volume", "amplitude"), ("volume_db", "amplitude"), ("volume_fluctuation_db", "amplitude"),
                         ("brightness_centroid", "harmonic_distribution"), ("attack_noise_db", "noise_magnitudes")):
        gradient, = torch.autograd.grad(out[name][out["present"]].sum(), leaves[source], retain_graph=True)
        assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0, name


def test_scaling_round_trip_and_clipping():
    for name in CONTROL_NAMES:
        low, high = CONTROL_RANGES[name]
        physical = torch.tensor([low, (low + high) / 2, high])
        assert torch.allclose(unscale_control(name, scale_control(name, physical)), physical)
        assert scale_control(name, torch.tensor([low - 1.0, high + 1.0])).tolist() == [0.0, 1.0]
        assert PHYSICAL_OF[name]
