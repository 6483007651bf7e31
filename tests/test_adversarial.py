"""The adversarial loss of the synthesis generator (mididdsp.synthesis.discriminator and its wiring in
mididdsp.training.generator_module), the spectral loss's f0 and the over-smoothing figure, on tiny batches made
here (exact resume of the adversarial training is in tests/test_generator_training.py, on its prepared folder)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mididdsp.dsp import HOP_SIZE
from mididdsp.evaluate import frame_variation, variation_means
from mididdsp.synthesis.discriminator import ControlDiscriminator, control_features, pool_frames
from mididdsp.synthesis.generator import SCALED_INPUTS
from mididdsp.training.generator_module import GeneratorModule

FRAMES = 200
MODEL = {"channels": 16, "layers": 2, "n_harmonics": 20, "n_noise_bands": 17, "reverb": None, "n_instruments": 2,
         "ranges": {name: [0.0, 1.0] for name in SCALED_INPUTS} | {"volume": [-50.0, -10.0],
                                                                    "volume_fluctuation": [0.0, 10.0],
                                                                    "vibrato": [0.0, 60.0],
                                                                    "brightness": [1.0, 8.0],
                                                                    "attack_noise": [-70.0, -20.0]}}


def batch(seed: int = 0) -> dict:
    """Two rows of two notes each in FRAMES frames, with random teacher controls and audio."""
    rng = torch.Generator().manual_seed(seed)
    notes = torch.tensor([[[0.05, 0.35, 60, 80], [0.40, 0.70, 64, 80]],
                          [[0.10, 0.30, 55, 80], [0.30, 0.75, 57, 80]]], dtype=torch.float32)
    expression = torch.rand(2, 2, 7, generator=rng)
    expression[..., 6] = 5.5
    harmonics = torch.softmax(torch.randn(2, FRAMES, 20, generator=rng), -1)
    return {"notes": notes, "note_mask": torch.ones(2, 2, dtype=torch.bool), "expression": expression,
            "instrument": torch.tensor([0, 1]), "start_frame": torch.tensor([0, 0]),
            "f0_hz": torch.full((2, FRAMES), 262.0), "amplitude": 0.01 + 0.1 * torch.rand(2, FRAMES, generator=rng),
            "harmonic_distribution": harmonics, "noise_magnitudes": 1e-3 * torch.rand(2, FRAMES, 17, generator=rng),
            "mask": torch.ones(2, FRAMES), "audio": 0.1 * torch.randn(2, (FRAMES - 1) * HOP_SIZE, generator=rng)}


def module(**weights) -> GeneratorModule:
    train = {"lr": 1e-3, "seed": 0, "loss_weights": {"spectral": 0.0, **weights},
             "discriminator": {"channels": 8, "layers": 2, "scales": [1, 2, 4]}}
    torch.manual_seed(0)
    return GeneratorModule(MODEL, train, {"spectral_seconds": 0.4}).train()


def test_discriminator_scores_and_activations_have_the_pooled_shapes() -> None:
    discriminator = ControlDiscriminator(n_controls=5, n_condition=3, n_instruments=2,
                                         config={"channels": 8, "layers": 3, "scales": [1, 2, 4]})
    outputs = discriminator(torch.randn(2, 101, 5), torch.randn(2, 101, 3), torch.tensor([0, 1]))
    assert len(outputs) == 3
    for (score, hidden), frames in zip(outputs, (101, 51, 26)):
        assert score.shape == (2, frames)
        assert [tuple(h.shape) for h in hidden] == [(2, 8, frames)] * 3
    # a partial last group is the mean of the frames it has
    pooled = pool_frames(torch.arange(5.0).view(1, 1, 5), 2)
    assert torch.equal(pooled, torch.tensor([[[0.5, 2.5, 4.0]]]))
    with pytest.raises(ValueError):
        discriminator(torch.randn(2, 101, 5), torch.randn(2, 100, 3), torch.tensor([0, 1]))


def test_control_features_leave_f0_out_and_scale_each_control() -> None:
    amplitude = torch.full((1, 3), 0.1)                       # -20 dB
    harmonics = torch.full((1, 3, 4), 0.25)
    noise = torch.full((1, 3, 2), 1e-3)                       # -60 dB
    features = control_features(amplitude, harmonics, noise)
    assert features.shape == (1, 3, 1 + 4 + 2)
    torch.testing.assert_close(features[0, 0, 0], torch.tensor((-20.0 + 40.0) / 30.0))
    torch.testing.assert_close(features[0, 0, 5:], torch.zeros(2))


def test_the_adversarial_gradient_never_reaches_f0_and_each_network_gets_only_its_own() -> None:
    lightning = module(adversarial=1.0, feature_matching=1.0, level=0.0, noise=0.0, harmonics=0.0, f0=0.0)
    captured = {}
    forward = lightning.model.forward

    def keep_outputs(*args, **kwargs):
        out = forward(*args, **kwargs)
        captured.setdefault("f0_hz", []).append(out["f0_hz"])
        captured.setdefault("amplitude", []).append(out["amplitude"])
        return out

    lightning.model.forward = keep_outputs
    losses = lightning.compute_losses(batch(), torch.Generator().manual_seed(0))
    assert {"adversarial", "feature_matching", "discriminator"} <= set(losses)
    generator_loss = losses["adversarial"] + losses["feature_matching"]
    f0 = captured["f0_hz"]
    assert all(t.requires_grad for t in f0)  # f0 is a function of the network: it could get a gradient
    f0_grads = torch.autograd.grad(generator_loss, f0, retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in f0_grads)
    # ... while the level does, and so do the network's weights other than the f0 heads
    level_grads = torch.autograd.grad(generator_loss, captured["amplitude"], retain_graph=True)
    assert all(g.abs().sum() > 0 for g in level_grads)
    head = torch.autograd.grad(generator_loss, lightning.model.output.weight, retain_graph=True)[0]
    assert head[7:].abs().sum() > 0      # the harmonics and noise bands
    assert not head[4:6].any()           # rows 4, 5: the slow f0 deviation and the onset scoop
    # the generator's losses do not train the discriminator, the discriminator's loss does not train the generator
    d_parameters = list(lightning.discriminator.parameters())
    grads = torch.autograd.grad(generator_loss, d_parameters, retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    grads = torch.autograd.grad(losses["discriminator"], d_parameters, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    g_parameters = [p for p in lightning.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses["discriminator"], g_parameters, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)


def test_no_discriminator_without_adversarial_weights_and_none_before_the_warm_up_ends() -> None:
    plain = module()
    assert plain.discriminator is None and "adversarial" not in plain.compute_losses(batch())
    train = {"lr": 1e-3, "seed": 0, "adversarial_start": 5, "loss_weights": {"adversarial": 0.1}}
    waiting = GeneratorModule(MODEL, train, {}).train()
    assert waiting.discriminator is not None and "adversarial" not in waiting.compute_losses(batch())
    # the exported model holds the generator only
    assert not any(name.startswith("discriminator") for name in waiting.model.state_dict())


def test_the_spectral_loss_plays_the_teachers_f0_where_it_has_one() -> None:
    lightning = module()
    lightning.spectral_f0 = "teacher"
    data = batch()
    data["f0_hz"][0, :100] = 0.0     # no teacher value: the generator's f0 plays
    generator = torch.Generator().manual_seed(0)
    out = lightning.model(data["notes"][:1], data["note_mask"][:1], data["expression"][:1], data["instrument"][:1],
                          FRAMES, 0, generator)
    out = {key: torch.cat([value, value]) for key, value in out.items()}
    lightning.spectral_loss(out, data, torch.Generator().manual_seed(0))
    played = lightning._crop["controls"]["f0_hz"]
    offset = int(torch.randint(0, FRAMES - 100, (1,), generator=torch.Generator().manual_seed(0)))
    crop = slice(offset, offset + 101)
    expected = torch.where(data["f0_hz"][0, crop] > 0, data["f0_hz"][0, crop], out["f0_hz"][0, crop])
    torch.testing.assert_close(played[0], expected)
    assert not played.requires_grad
    lightning.spectral_f0 = "generator"
    lightning.spectral_loss(out, data, torch.Generator().manual_seed(0))
    torch.testing.assert_close(lightning._crop["controls"]["f0_hz"][0], out["f0_hz"][0, crop])


def test_frame_variation_measures_known_differences_inside_notes_only() -> None:
    # two notes of 4 frames and a rest: level steps of 2 dB inside note 0, 6 dB inside note 1; the jumps across
    # the note boundary and into the rest do not count
    note_index = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, -1])
    level = np.array([0, 2, 4, 6, 40, 34, 28, 22, -80, -20], float)
    harmonics = np.zeros((10, 2))
    harmonics[:, 0] = 1.0
    harmonics[1] = [0.0, 2.0]          # normalised: [0, 1], two L1 changes of 2 (into and out of frame 1)
    noise = np.zeros((10, 3))
    noise[5:8] = [[3, 3, 0], [0, 0, 0], [3, 3, 0]]   # mean band change 2 dB, three times, inside note 1
    figures = frame_variation(level, harmonics, noise, note_index)
    assert figures["pairs"] == 6
    means = variation_means([figures])
    assert means["level_db"] == pytest.approx((3 * 2 + 3 * 6) / 6)
    assert means["harmonics"] == pytest.approx(2 * 2 / 6)
    assert means["noise_db"] == pytest.approx(3 * 2 / 6)
    # a smoothed copy of a fluttering level varies less: the ratio `eval controls` reports falls below 1
    inside = np.zeros(50, int)
    flutter = np.where(np.arange(50) % 2 == 0, -20.0, -24.0)
    smooth = np.convolve(np.pad(flutter, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    flat_h, flat_n = np.ones((50, 4)), np.zeros((50, 2))
    rough = variation_means([frame_variation(flutter, flat_h, flat_n, inside)])["level_db"]
    assert rough == pytest.approx(4.0)
    # a 3-frame average leaves 1/3 of the flutter (4/3 dB a frame; the two edge frames differ a little)
    assert variation_means([frame_variation(smooth, flat_h, flat_n, inside)])["level_db"] == pytest.approx(4 / 3, rel=0.05)
