"""The render's torch-free inference (mididdsp.weights, mididdsp.seeds, mididdsp.synthesis.inference,
mididdsp.expression.prior_inference) against the torch modules it stands in for: the same weights bit for bit,
the same draws bit for bit, the same controls and expression to float rounding."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mididdsp.errors import ModelError
from mididdsp.render import PRETRAINED_MIDI


@pytest.fixture(scope="module")
def modules():
    from mididdsp.models import load_model

    return (load_model(PRETRAINED_MIDI / "generator", expected=("SynthesisGenerator",)),
            load_model(PRETRAINED_MIDI / "prior", expected=("ExpressionPrior",)))


def test_weights_read_without_torch_are_torch_loads_bits(tmp_path):
    from mididdsp.weights import WeightsError, read_state_dict

    for part in ("generator", "prior"):
        path = PRETRAINED_MIDI / part / "weights.pt"
        ours, theirs = read_state_dict(path), torch.load(path, weights_only=True)
        assert list(ours) == list(theirs)
        for name, tensor in theirs.items():
            assert ours[name].dtype == tensor.numpy().dtype and np.array_equal(ours[name], tensor.numpy()), name
    # views into a shared storage (offsets, transposes), other dtypes, a scalar, an empty tensor
    base = torch.arange(24.0).reshape(4, 6)
    state = {"transposed": base.t(), "window": base[1:, 2:4], "long": torch.arange(5), "flags": torch.tensor([True, False]),
             "double": torch.linspace(0, 1, 7, dtype=torch.float64), "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3)}
    torch.save(state, tmp_path / "w.pt")
    read = read_state_dict(tmp_path / "w.pt")
    for name, tensor in state.items():
        assert read[name].shape == tuple(tensor.shape) and np.array_equal(read[name], tensor.contiguous().numpy()), name
    # not a state dict of tensors: refused, not executed
    torch.save({"weights": base, "code": print}, tmp_path / "code.pt")
    with pytest.raises(WeightsError, match="print; expected only tensors"):
        read_state_dict(tmp_path / "code.pt")
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "text.pt")


def test_a_broken_model_is_one_clear_error_naming_the_file(tmp_path):
    from mididdsp.render import load_model

    model = tmp_path / "midi"
    shutil.copytree(PRETRAINED_MIDI, model)
    weights = model / "prior" / "weights.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelError, match="corrupt, truncated") as error:
        load_model(model)
    assert str(weights) in str(error.value) and "\n" not in str(error.value)
    shutil.copy(model / "generator" / "weights.pt", weights)  # readable, but another model's
    with pytest.raises(ModelError, match=r"mismatched weights.*missing"):
        load_model(model)


@pytest.mark.parametrize("seed", [0, 7, 2 ** 40 + 3, 2 ** 62 - 5, -3])
def test_seeded_draws_are_torch_rands_bits(seed):
    from mididdsp.seeds import torch_uniform

    for shape in ((1, 1), (3, 9, 7), (1, 500)):
        expected = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.array_equal(torch_uniform(seed, shape), expected)


def random_voice(rng, count: int):
    starts = np.cumsum(rng.uniform(0.1, 0.6, count)).astype(np.float32)
    notes = np.stack([starts, starts + rng.uniform(0.05, 0.5, count), rng.integers(55, 80, count),
                      rng.integers(30, 120, count)], 1).astype(np.float32)
    expression = rng.uniform(0, 1, (count, 8)).astype(np.float32)
    expression[:, 6] = rng.uniform(0, 7, count)    # vibrato rate, Hz
    expression[:, 7] = rng.uniform(-10, 5, count)  # level offset, dB
    return notes, expression


@pytest.mark.parametrize("seed", [0, None])
def test_the_generator_without_torch_equals_the_module(modules, seed):
    """Spans with context, a span cut into pieces at onsets, the vibrato phases from the seed: the controls of
    generate_spans (torch) to float rounding, on a voice of 40 notes with legato, rests and a level offset."""
    from mididdsp.synthesis.generator import generate_spans
    from mididdsp.synthesis.inference import GeneratorInference

    module = modules[0]
    ours = GeneratorInference.load(PRETRAINED_MIDI / "generator")
    notes, expression = random_voice(np.random.default_rng(1), 40)
    frames = int(notes[-1, 1] * 250) + 300
    spans = [(0, 200), (200, frames)]
    counter: dict = {}
    expected = generate_spans(module, notes, expression, 3, frames, spans, seed, chunk_frames=1000)
    got = ours.spans(notes, expression, 3, frames, spans, seed, chunk_frames=1000, counter=counter)
    assert counter["generator_frames"] > frames  # the pieces' context counted
    for reference, controls in zip(expected, got):
        for name in ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes"):
            want = reference[name][0].numpy()
            assert controls[name].shape == want.shape, name
            assert np.abs(controls[name] - want).max() <= 1e-5 * np.abs(want).max(), name
    assert ours.release_frames(3, 0.0) == __import__("mididdsp.synthesis.generator", fromlist=["x"]).release_frames(
        module, 3, 0.0)
    response = module.synth.reverb.get_impulse_response(torch.tensor([5])).detach()[0].numpy()
    assert np.array_equal(ours.impulse_response(5), response)


def test_the_prior_without_torch_equals_the_module(modules):
    """Voices of different lengths (padding), three temperatures, fixed values: the module's compiled sampling to
    float rounding, and the fixed values returned exactly."""
    from mididdsp.expression.prior_inference import PriorInference

    module = modules[1]
    ours = PriorInference.load(PRETRAINED_MIDI / "prior")
    rng = np.random.default_rng(0)
    batch, count = 4, 120
    notes = np.zeros((batch, count, 4), np.float32)
    mask = np.zeros((batch, count), bool)
    for row, length in enumerate((count, 1, 37, 90)):
        voice, _ = random_voice(rng, length)
        notes[row, :length], mask[row, :length] = voice, True
    ids = np.array([0, 3, 7, 12])
    context, inputs = module.context(*(torch.from_numpy(a) for a in (notes, mask, ids)))
    our_context, our_inputs = ours.context(notes, mask, ids)
    assert np.abs(our_context - context.detach().numpy()).max() < 1e-5
    assert np.abs(our_inputs - inputs.detach().numpy()).max() < 1e-6
    fixed_values = rng.uniform(0, 1, (batch, count, 7)).astype(np.float32)
    fixed_mask = rng.uniform(0, 1, (batch, count, 7)) < 0.2
    for temperature in (1.0, 0.0, 0.5):
        for fixed in (False, True):
            extra = {"fixed_values": fixed_values, "fixed_mask": fixed_mask} if fixed else {}
            with torch.no_grad():
                expected = module.sample(*(torch.from_numpy(a) for a in (notes, mask, ids)), temperature=temperature,
                                         seed=3, compiled=True,
                                         **{key: torch.from_numpy(value) for key, value in extra.items()}).numpy()
            got = ours.sample(notes, mask, ids, temperature=temperature, seed=3, **extra)
            assert np.abs(got - expected).max() < 1e-4, (temperature, fixed)
            if fixed:
                kept = fixed_mask & mask[..., None]
                assert np.array_equal(got[kept], fixed_values[kept])
            assert not got[~mask].any()


@pytest.mark.parametrize("reverb", ["exponential", None])
def test_a_generator_of_another_shape_and_reverb_loads_and_matches(tmp_path, reverb):
    """A model a user trained with other sizes (3 layers of 16 channels, 2 instruments) and another reverb (the
    parametric one, whose responses its module makes; or none): the inference loads it from its directory and
    gives the module's controls and responses."""
    from mididdsp.models import read_model_config, save_model
    from mididdsp.synthesis.generator import SynthesisGenerator, generate_spans
    from mididdsp.synthesis.inference import GeneratorInference

    config = dict(read_model_config(PRETRAINED_MIDI / "generator")["model"])
    config.update(channels=16, layers=3, n_instruments=2, reverb=reverb, reverb_seconds=0.1)
    module = SynthesisGenerator(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    save_model(module, tmp_path / "generator", {"instruments": {"a": 0, "b": 1}})
    ours = GeneratorInference.load(tmp_path / "generator")
    notes, expression = random_voice(np.random.default_rng(2), 12)
    frames = int(notes[-1, 1] * 250) + 100
    expected = generate_spans(module.eval(), notes, expression, 1, frames, [(0, frames)], 4)[0]
    got = ours.spans(notes, expression, 1, frames, [(0, frames)], 4)[0]
    for name in ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes"):
        want = expected[name][0].numpy()
        assert np.abs(got[name] - want).max() <= 1e-5 * np.abs(want).max(), name
    if reverb is None:
        assert ours.impulse_response(1) is None
    else:
        with torch.no_grad():
            response = module.synth.reverb.get_impulse_response(torch.tensor([1]))[0].numpy()
        assert np.array_equal(ours.impulse_response(1), response)
