"""The synthesis generator (mididdsp.synthesis.generator): the controls it is given come out, measured by the
extractor's own formulas (mididdsp.expression.controls) and, for vibrato and volume, in the rendered audio.

A generator with random weights is used where a property must hold by construction whatever the network
learned; the shipped MIDI model where a property depends on training (vibrato 0 is steady)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mididdsp.expression.controls import CONTROL_NAMES, CONTROL_RANGES, note_expression
from mididdsp.score import Note, note_frames
from mididdsp.synthesis.generator import SynthesisGenerator, frame_layout, generate_voice
from mididdsp.synthesis.tilt import TILT_TOLERANCE, tilt_to_centroid, without_tilt

RANGES = {name: list(pair) for name, pair in CONTROL_RANGES.items()}
NOTES = torch.tensor([[[0.10, 0.90, 60, 80], [0.90, 1.80, 64, 90], [2.00, 3.00, 67, 70], [3.2, 4.0, 72, 60]]])
# (a fluctuation of a dB or two is mostly spent on the attack and release dips: the rest of the note is then flat
# within the extractor's 1 dB peak tolerance, and its peak reads as the plateau's middle; so the notes here
# fluctuate by 2.4-6 dB)
EXPRESSION = torch.tensor([[[0.5, 0.3, 0.3, 0.5, 0.4, 0.5, 5.5], [0.7, 0.3, 0.8, 0.0, 0.2, 0.3, 5.0],
                            [0.3, 0.5, 0.5, 0.8, 0.6, 0.6, 6.0], [0.6, 0.2, 0.6, 0.3, 0.5, 0.4, 4.5]]])
FRAMES = int(4.5 * 250) + 1


def random_generator(seed: int = 0, **config) -> SynthesisGenerator:
    """Random weights (output layer included: the learned parts are far from zero), reverb off."""
    torch.manual_seed(seed)
    model = SynthesisGenerator({"ranges": RANGES, "n_instruments": 2, "reverb": None, **config})
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.2)
        model.output.bias.normal_(0, 0.3)
        model.output.bias[0] = -3.0  # attack / release dips of a few dB, as trained models have (a dip deeper
        # than the asked fluctuation leaves a flat note whose peak the extractor puts in the middle)
    return model.eval()


def measured(out: dict, notes: torch.Tensor = NOTES) -> dict:
    note_index = torch.where(out["active"], out["note"], torch.full_like(out["note"], -1))
    controls = {key: out[key] for key in ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")}
    with torch.no_grad():
        return note_expression(controls, note_index, notes[..., 2], notes.shape[1], ranges=RANGES)


def test_the_inference_network_equals_the_training_network() -> None:
    """The render's time-major stack (three matrix products per dilated convolution, on shifted rows) against
    the training path's convolutions, with norms and biases far from their initial values and windows shorter than
    the widest dilation (its outer taps then read only zeros)."""
    model = random_generator(3, layers=6)
    with torch.no_grad():
        for norm in model.norms:
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
        for conv in model.blocks:
            conv.bias.normal_(0.0, 0.3)
    features = torch.randn(2, 300, model.input.in_channels - model.config.instrument_embedding)
    instrument = torch.tensor([0, 1])
    for frames in (300, 40, 1):
        with torch.enable_grad():
            reference = model.network(features[:, :frames], instrument).detach()
        with torch.no_grad():
            fast = model.network(features[:, :frames], instrument)
        assert fast.shape == reference.shape
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
        with torch.no_grad():  # one item, as a render runs it (its own path: no stacking)
            single = model.network(features[1:, :frames], instrument[1:])
        torch.testing.assert_close(single, reference[1:], rtol=1e-5, atol=1e-5)


def test_frame_layout_matches_score_note_frames() -> None:
    rng = np.random.default_rng(1)
    starts = np.cumsum(rng.uniform(0.05, 0.6, 30))
    notes = [Note(float(s), float(s + d), 60, 90) for s, d in zip(starts, rng.uniform(0.01, 0.7, 30))]
    notes = [n if i + 1 == len(notes) or n.end <= notes[i + 1].start else Note(n.start, notes[i + 1].start, 60, 90)
             for i, n in enumerate(notes)]
    frames = int(starts[-1] * 250) + 300
    want = note_frames(notes, frames)["note_index"]
    array = torch.tensor([[[n.start, n.end, n.pitch, n.velocity] for n in notes]])
    layout = frame_layout(array, torch.ones(1, len(notes), dtype=torch.bool), frames)
    got = torch.where(layout.active, layout.note, torch.full_like(layout.note, -1))[0].numpy()
    np.testing.assert_array_equal(got, want)
    # a window of the same frames agrees with the whole
    window = frame_layout(array, torch.ones(1, len(notes), dtype=torch.bool), 200, 500)
    np.testing.assert_array_equal(torch.where(window.active, window.note, -1)[0].numpy(), want[500:700])


def test_compiled_layout_and_features_equal_the_tensor_code(monkeypatch) -> None:
    """Without gradient the frame layout and the per-frame features are compiled walks: the same integers, the
    same features to float rounding, for a batch with padding notes, windows that start before, inside and after
    the notes, and short notes cut by the next onset."""
    from mididdsp.synthesis import generator, kernels

    if not kernels.available():
        pytest.skip("numba is not installed")
    model = random_generator(2)
    rng = np.random.default_rng(4)
    starts = np.cumsum(rng.uniform(0.02, 0.5, 12))
    notes = torch.tensor([[[s, s + d, 50 + i, 80] for i, (s, d) in enumerate(zip(starts, rng.uniform(0.01, 0.6, 12)))]],
                         dtype=torch.float32).repeat(2, 1, 1)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 8:] = False  # the second item has 8 notes and 4 padding rows
    expression = torch.rand(2, 12, 7, generator=torch.Generator().manual_seed(0))
    for frames, start in ((int(starts[-1] * 250) + 200, 0), (300, 120), (50, int(starts[-1] * 250) + 400)):
        with torch.no_grad():
            fast = generator.frame_layout(notes, mask, frames, start)
            fast_features = model.features(notes, generator.note_neighbours(notes, mask), expression, fast)
            monkeypatch.setattr(generator, "_compiled", lambda tensor: False)
            slow = generator.frame_layout(notes, mask, frames, start)
            slow_features = model.features(notes, generator.note_neighbours(notes, mask), expression, slow)
            monkeypatch.undo()
        for name in ("note", "active", "since_onset", "length", "since_end", "first", "stop"):
            assert torch.equal(getattr(fast, name), getattr(slow, name)), name
        assert fast_features.shape == slow_features.shape
        assert (fast_features - slow_features).abs().max() < 1e-6


def test_tilt_reaches_the_asked_centroid() -> None:
    torch.manual_seed(0)
    logits = torch.randn(200, 60).cumsum(-1) * 0.3          # smooth random spectra
    logits[100:, 20:] = -1e4                                 # and spectra cut by Nyquist after harmonic 20
    target = torch.cat([torch.rand(100) * 30 + 1, torch.rand(100) * 15 + 1])
    distribution = tilt_to_centroid(logits, target)
    centroid = (distribution * torch.arange(1, 61.0)).sum(-1)
    torch.testing.assert_close(distribution.sum(-1), torch.ones(200))
    assert (centroid - target).abs().max() < 5e-3  # harmonic numbers: 0.0007 of the brightness scale
    assert distribution[100:, 20:].max() < 1e-12


def test_tilt_solve_without_host_reads_equals_the_shrinking_one() -> None:
    """The accelerator form of the solve (converged frames frozen by a mask, no convergence read back to the host)
    gives the CPU form's betas: each frame stops at the same iteration (to float rounding: a matrix product over
    fewer rows may round differently)."""
    from mididdsp.synthesis.tilt import _solve_tilt

    torch.manual_seed(1)
    logits = torch.randn(500, 60).cumsum(-1) * 0.3
    logits[250:, 25:] = -1e4
    target = torch.cat([torch.rand(250) * 30 + 1, torch.rand(250) * 20 + 1])
    k = torch.arange(1, 61.0)
    shrinking = _solve_tilt(logits, target, k, 24, fixed_shapes=False)
    masked = _solve_tilt(logits, target, k, 24, fixed_shapes=True)
    torch.testing.assert_close(masked, shrinking, atol=1e-5, rtol=0)


def test_compiled_tilt_equals_the_torch_solve() -> None:
    """The inference solve (mididdsp.synthesis.kernels: float64 per frame, warm-started from the previous frame)
    gives the torch solve's distributions to float rounding, and its centroids within TILT_TOLERANCE, on logits
    as the generator makes them (squashed, de-tilted, cut by Nyquist), in a shuffled and in a smooth frame order."""
    from mididdsp.synthesis import generator, kernels as tilt

    if not tilt.available():
        pytest.skip("numba is not installed")
    torch.manual_seed(0)
    frames, harmonics = 4000, 60
    raw = torch.randn(frames, harmonics).cumsum(-1) * torch.rand(frames, 1) + torch.randn(frames, harmonics)
    logits = without_tilt(generator.LOGIT_RANGE * torch.tanh(raw / generator.LOGIT_RANGE))
    highest = torch.randint(3, harmonics + 1, (frames,))
    logits = logits.masked_fill(torch.arange(1, harmonics + 1) > highest[:, None], -1e4)
    # inside the reachable range (at its ends the exact tilt is infinite and both solves stop at their bracket)
    target = 1.05 + torch.rand(frames) * (highest.float() - 1.1).clamp_max(25.0)
    k = torch.arange(1, harmonics + 1.0)
    for order in (torch.randperm(frames), torch.argsort(target)):
        fast = torch.from_numpy(tilt.tilt_to_centroid_inference(logits[order], target[order]))
        with torch.enable_grad():  # a gradient asked for: the torch solve
            slow = tilt_to_centroid(logits[order].clone().requires_grad_(), target[order]).detach()
        assert (fast - slow).abs().max() < 3e-5  # the torch solve's float32 exponents round to ~1e-5
        assert ((fast * k).sum(-1) - target[order]).abs().max() < TILT_TOLERANCE
        torch.testing.assert_close(fast.sum(-1), torch.ones(frames))
        assert fast[(k > highest[order][:, None])].max() == 0.0
    with torch.no_grad():  # tilt_to_centroid itself takes the compiled solve when no gradient is wanted
        assert torch.equal(tilt_to_centroid(logits, target),
                           torch.from_numpy(tilt.tilt_to_centroid_inference(logits, target)))


def test_compiled_harmonic_distribution_needs_no_detilt_and_no_mask() -> None:
    """The inference path skips the logits' line removal (a line in k only moves the solved beta) and cuts
    Nyquist by a count per frame instead of a [T, K] mask: the same distributions as the training path's
    squash, de-tilt, mask and torch solve, to float rounding, on logits with steep lines in them; and the count
    is the training path's ``f0 * k < limit`` exactly, at the boundaries too."""
    from mididdsp.synthesis import generator, kernels

    if not kernels.available():
        pytest.skip("numba is not installed")
    torch.manual_seed(1)
    frames, harmonics, limit = 3000, 60, 7600.0
    raw = (torch.randn(frames, harmonics) * 3 + torch.linspace(-20, 20, harmonics) * torch.randn(frames, 1))[None]
    f0_hz = torch.exp(torch.empty(1, frames).uniform_(math.log(30.0), math.log(7000.0)))
    f0_hz[0, :60] = limit / torch.arange(2, 62)  # exactly on a harmonic's boundary: that harmonic is cut
    highest = torch.from_numpy(kernels.nyquist_count(f0_hz, harmonics, limit))
    nyquist_ok = f0_hz.unsqueeze(-1) * torch.arange(1, harmonics + 1) < limit
    assert torch.equal(highest, nyquist_ok.float().sum(-1).clamp_min(1.0))
    target = torch.minimum(1.05 + torch.rand(1, frames) * (highest - 1.1).clamp(0.0, 25.0), highest)
    fast = torch.from_numpy(kernels.harmonic_distribution(raw, highest, target, generator.LOGIT_RANGE))
    logits = without_tilt(generator.LOGIT_RANGE * torch.tanh(raw / generator.LOGIT_RANGE))
    with torch.enable_grad():  # a gradient asked for: the torch solve
        slow = tilt_to_centroid(logits.masked_fill(~nyquist_ok, -1e4).requires_grad_(), target).detach()
    assert (fast - slow).abs().max() < 3e-5
    assert fast[~nyquist_ok].max() == 0.0


@pytest.mark.parametrize("noise", [{}, {"noise_reference": "level", "noise_shape_db": 30.0},
                                   {"noise_reference": "level", "noise_shape_db": 30.0, "level_shape": "learned"}])
def test_compiled_inference_equals_the_tensor_code(noise: dict, monkeypatch) -> None:
    """Without gradient the generator runs its per-frame stages compiled (mididdsp.synthesis.kernels): the same
    controls as the tensor code to float rounding, high notes whose harmonics Nyquist cuts included."""
    from mididdsp.synthesis import generator, kernels

    if not kernels.available():
        pytest.skip("numba is not installed")
    model = random_generator(3, **noise)
    notes = NOTES.clone()
    notes[0, 3, 2] = 118.0  # 6.6 kHz: one harmonic under 0.95 Nyquist
    mask = torch.ones(1, 4, dtype=torch.bool)
    # the whole voice, and a window that starts inside the first note and ends inside the last (a span's piece)
    windows = [(FRAMES, 0), (700, 150)]
    with torch.no_grad():
        compiled = [model(notes, mask, EXPRESSION, torch.tensor([1]), frames, start,
                          generator=torch.Generator().manual_seed(0)) for frames, start in windows]
        monkeypatch.setattr(generator, "_compiled", lambda tensor: False)
        tensor = [model(notes, mask, EXPRESSION, torch.tensor([1]), frames, start,
                        generator=torch.Generator().manual_seed(0)) for frames, start in windows]
    for fast, slow in zip(compiled, tensor):
        for key in ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes"):
            scale = slow[key].abs().amax(-1, keepdim=True) if slow[key].dim() == 3 else slow[key].abs()
            assert ((fast[key] - slow[key]).abs() / scale).max() < 1e-4, key
        for key in ("amplitude_db", "noise_db"):  # dB: absolute
            assert (fast[key] - slow[key]).abs().max() < 1e-3, key
        assert torch.equal(fast["active"], slow["active"]) and torch.equal(fast["note"], slow["note"])


@pytest.mark.parametrize("noise", [{}, {"noise_reference": "level", "noise_shape_db": 30.0},
                                   {"noise_reference": "level", "noise_shape_db": 30.0, "level_shape": "learned"}])
def test_controls_come_out_as_asked_by_construction(noise: dict) -> None:
    """Volume, fluctuation, brightness and attack noise are exact; the peak lies where asked (within the small
    learned ripple); vibrato extent and rate within 3 cents and 0.3 Hz, whatever the weights; with the noise
    level learned under the harmonic level and wide band shapes too."""
    for seed in range(3):
        model = random_generator(seed, **noise)
        with torch.no_grad():
            out = model(NOTES, torch.ones(1, 4, dtype=torch.bool), EXPRESSION, torch.tensor([1]), FRAMES,
                        generator=torch.Generator().manual_seed(seed))
        values = measured(out)
        for j, name in enumerate(CONTROL_NAMES):
            got, want = values[name][0], EXPRESSION[0, :, j]
            if name in ("volume", "volume_fluctuation", "brightness", "attack_noise"):
                torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
            elif name == "volume_peak_position":
                assert (got - want).abs().max() < 0.12, (seed, got, want)
        extent, rate = values["vibrato_extent_cents"][0], values["vibrato_rate_hz"][0]
        asked = EXPRESSION[0, :, 3] * RANGES["vibrato"][1]
        assert (extent - asked).abs().max() < 3.0, (extent, asked)  # random drift of +-50 cents leaks a little
        with_vibrato = asked > 0
        assert (rate[with_vibrato] - EXPRESSION[0, with_vibrato, 6]).abs().max() < 0.3  # the issue target (0.8 s notes)


def test_the_learned_level_contour_peaks_where_asked_whatever_the_rates() -> None:
    """level_shape "learned": mean and fluctuation exact, and the level rises to the asked peak frame and falls
    after it (between the edge dips) for any rates: random output weights, large enough to give plateaus and
    steep sides. (The extractor's peak, the middle of the top 1 dB, then moves with the contour's asymmetry:
    within 0.12 for the weights of the test above, 0.17 for these; a trained contour is measured in RESULTS.)"""
    notes = torch.tensor([[[0.1, 1.3, 60, 80], [1.4, 2.2, 62, 80], [2.3, 4.3, 64, 80], [4.4, 5.0, 65, 80]]])
    # loud notes: a skewed contour's deepest frames stay above the extractor's -80 dB floor
    expression = torch.tensor([[[0.8, 0.6, 0.2, 0.0, 0.4, 0.5, 5.0], [0.85, 0.5, 0.75, 0.0, 0.4, 0.5, 5.0],
                                [0.75, 0.7, 0.5, 0.0, 0.4, 0.5, 5.0], [0.8, 0.4, 0.35, 0.0, 0.4, 0.5, 5.0]]])
    frames = int(5.2 * 250)
    for seed in range(4):
        model = random_generator(seed, level_shape="learned", noise_reference="level", noise_shape_db=30.0)
        with torch.no_grad():
            model.output.weight[1].normal_(0, 1.0)   # rates varying by e^+-3 along the note
            out = model(notes, torch.ones(1, 4, dtype=torch.bool), expression, torch.tensor([0]), frames)
        values = measured(out, notes)
        for j in (0, 1):
            torch.testing.assert_close(values[CONTROL_NAMES[j]][0], expression[0, :, j], atol=2e-3, rtol=0)
        level = out["amplitude_db"][0]
        for k, (start, end) in enumerate(notes[0, :, :2].tolist()):
            first, stop = round(start * 250), round(end * 250)
            inner = level[first + 24:stop - 24]          # past the 32 ms edge dips' reach (3 time constants)
            peak = first + expression[0, k, 2].item() * (stop - first) - (first + 24)
            rising, falling = inner[:max(0, math.floor(peak)) + 1], inner[math.ceil(peak):]
            assert (rising.diff() >= -1e-4).all() and (falling.diff() <= 1e-4).all(), (seed, k)
            at_peak = torch.maximum(inner[math.floor(peak)], inner[math.ceil(peak)])
            assert at_peak >= inner.max() - 1e-3, (seed, k)     # the maximum (a plateau may share it)


def test_volume_moves_the_level_by_the_asked_decibels() -> None:
    model = random_generator(4)
    low, high = RANGES["volume"]
    levels = []
    for scaled in (0.4, 0.4 + 6.0 / (high - low)):
        expression = EXPRESSION.clone()
        expression[0, :, 0] = scaled
        with torch.no_grad():
            out = model(NOTES, torch.ones(1, 4, dtype=torch.bool), expression, torch.tensor([0]), FRAMES)
        levels.append(measured(out)["volume_db"][0])
    torch.testing.assert_close(levels[1] - levels[0], torch.full((4,), 6.0), atol=1e-3, rtol=0)


def test_level_offset_moves_volume_and_attack_noise_by_its_decibels() -> None:
    """An eighth input column (a table's level_offset_db) is added to the note's level and attack noise: the
    extractor then reads volume_db and attack_noise_db higher by exactly that many dB, the rest unchanged."""
    model = random_generator(5)
    offsets = torch.tensor([-6.0, -6.0, 3.5, 3.5])  # (the extractor floors noise at -80 dB: stay above it)
    plain = torch.cat([EXPRESSION, torch.zeros(1, 4, 1)], dim=-1)
    shifted = torch.cat([EXPRESSION, offsets.view(1, 4, 1)], dim=-1)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        base, moved = (measured(model(NOTES, mask, e, torch.tensor([0]), FRAMES)) for e in (plain, shifted))
        seven = measured(model(NOTES, mask, EXPRESSION, torch.tensor([0]), FRAMES))
    for name in ("volume_db", "attack_noise_db"):
        torch.testing.assert_close(moved[name][0] - base[name][0], offsets, atol=2e-3, rtol=0)
        torch.testing.assert_close(seven[name], base[name])  # no eighth column: offset 0
    for name in ("volume_fluctuation_db", "peak_position", "brightness_centroid"):
        torch.testing.assert_close(moved[name], base[name], atol=2e-3, rtol=0)


def test_level_relative_noise_follows_the_level_and_keeps_its_colour() -> None:
    """With ``noise_reference: level`` a level offset moves every frame's noise by exactly its decibels (the noise
    is learned under the harmonic level; with the absolute reference the sustained noise stays put), and away from
    the attack window the bands keep their full learned spread however quiet the noise."""
    mask = torch.ones(1, 4, dtype=torch.bool)
    plain = torch.cat([EXPRESSION, torch.zeros(1, 4, 1)], dim=-1)
    quieter = torch.cat([EXPRESSION, torch.full((1, 4, 1), -30.0)], dim=-1)
    moved = {}
    for reference in ("level", "absolute"):
        model = random_generator(2, noise_reference=reference, noise_shape_db=30.0)
        with torch.no_grad():
            base, low = (model(NOTES, mask, e, torch.tensor([0]), FRAMES) for e in (plain, quieter))
        sustained = base["active"][0] & (base["amplitude_db"][0] > -90)
        for start in NOTES[0, :, 0].tolist():  # past each attack window (its spread shrinks near the -80 dB floor)
            first = int(round(start * 250))
            sustained[first:first + 10] = False
        shift = (20 * torch.log10(low["noise_magnitudes"][0]) - 20 * torch.log10(base["noise_magnitudes"][0]))
        moved[reference] = shift[sustained]
        if reference == "level":
            bands = 20 * torch.log10(low["noise_magnitudes"][0][sustained])
            spread = (bands.max(-1).values - bands.min(-1).values)
            assert float(spread.median()) > 20.0  # a flat colour would be 0 dB wide
    torch.testing.assert_close(moved["level"], torch.full_like(moved["level"], -30.0), atol=1e-3, rtol=0)
    assert float(moved["absolute"].abs().median()) < 1.0


def test_same_seed_same_controls_and_other_seeds_other_vibrato() -> None:
    model = random_generator(5)

    def run(seed):
        return generate_voice(model, NOTES[0], EXPRESSION[0], 1, FRAMES, seed=seed)

    first, again, other = run(7), run(7), run(8)
    for key in first:
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["f0_hz"], other["f0_hz"])
    assert torch.equal(first["amplitude"], other["amplitude"])  # only the vibrato phase is random


def test_chunked_generation_equals_one_pass() -> None:
    model = random_generator(6)
    starts = torch.arange(40) * 0.25
    notes = torch.stack([starts, starts + 0.2, 60 + (torch.arange(40) % 12).float(), torch.full((40,), 90.0)], -1)
    expression = torch.rand(40, 7, generator=torch.Generator().manual_seed(0))
    expression[:, 6] = 5.0
    frames = 10 * 250 + 1
    whole = generate_voice(model, notes, expression, 0, frames, seed=3, chunk_frames=100000)
    pieces = generate_voice(model, notes, expression, 0, frames, seed=3, chunk_frames=300)
    for key in whole:
        torch.testing.assert_close(pieces[key], whole[key], atol=1e-4, rtol=1e-4)  # the centroid solve may stop
        # at another iteration in a piece (tolerance 1e-4 harmonic numbers)


def test_rendered_audio_has_the_asked_vibrato_and_level() -> None:
    """Through the synthesizer and the refined pitch tracker: 30 cents at 5.5 Hz come out of the audio."""
    from mididdsp.dsp import compute_loudness
    from mididdsp.expression.controls import NoteFrames
    from mididdsp.expression.vibrato import vibrato
    from mididdsp.pitch import compute_f0, refine_f0

    model = random_generator(7)
    with torch.no_grad():  # an instrument-like sound, as trained models make (random weights can put the noise
        # above the harmonics or scatter the harmonics at random, and then no pitch tracker hears a vibrato):
        model.output.weight[3].zero_()  # breath noise well below the harmonics
        model.output.bias[3] = -6.0
        model.output.weight[6:66].zero_()  # a smooth spectrum (the tilt to the asked brightness alone)
    notes = torch.tensor([[0.2, 2.2, 67.0, 90.0]])
    frames = int(2.6 * 250) + 1
    n_samples = (frames - 1) * 64
    results = []
    for vibrato_scaled, volume in ((0.5, 0.5), (0.0, 0.5 + 6 / 60)):
        expression = torch.tensor([[volume, 0.1, 0.5, vibrato_scaled, 0.4, 0.3, 5.5]])
        controls = generate_voice(model, notes, expression, 0, frames, seed=0)
        audio = model.synth.render(controls, n_samples, generator=torch.Generator().manual_seed(0))[0]
        f0, _ = compute_f0(audio.numpy())
        f0 = refine_f0(audio.numpy(), f0)
        index = torch.full((frames,), -1)
        index[int(0.2 * 250):int(2.2 * 250)] = 0
        deviation = 1200 * torch.log2(torch.as_tensor(f0[:frames]).clamp_min(1) / 391.995)
        extent, rate = vibrato(deviation.unsqueeze(0), NoteFrames(index.unsqueeze(0), 1))
        loudness = compute_loudness(audio[None])[0][int(0.6 * 250):int(2.0 * 250)].mean()
        results.append((float(extent[0]), float(rate[0]), float(loudness)))
    (extent, rate, level), (steady, _, louder) = results
    assert abs(extent - 30.0) < 2.0 and abs(rate - 5.5) < 0.15, results
    assert steady < 3.0, results
    assert abs((louder - level) - 6.0) < 0.5, results


def test_the_learned_drift_never_retunes_a_note() -> None:
    """Without vibrato, glides or scoops, every note's mean pitch is the written pitch, whatever the drift head
    learned (random weights drift by tens of cents)."""
    notes = torch.tensor([[[0.10, 0.90, 60, 80], [1.30, 2.00, 64, 90], [2.40, 3.20, 67, 70]]])
    expression = EXPRESSION[:, :3].clone()
    expression[..., 3] = 0.0  # no vibrato
    drift = []
    for seed in range(3):
        model = random_generator(seed)
        with torch.no_grad():
            model.output.weight[5].zero_()  # the onset scoop's head: off
            model.output.bias[5] = 0.0
            out = model(notes, torch.ones(1, 3, dtype=torch.bool), expression, torch.tensor([0]), FRAMES)
        cents = 1200.0 * torch.log2(out["f0_hz"][0] / 440.0) + 6900.0
        for index in range(3):
            frames = out["active"][0] & (out["note"][0] == index)
            drift.append((cents[frames] - 100.0 * notes[0, index, 2]).abs().max().item())
            assert abs((cents[frames] - 100.0 * notes[0, index, 2]).mean().item()) < 0.05
    assert max(drift) > 10.0  # the drift itself is there: it moves within the note
