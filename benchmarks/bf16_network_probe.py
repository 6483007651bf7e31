"""Would bfloat16 pay for the generator's convolution stack on this CPU? (issue 26, render cost)

    python benchmarks/bf16_network_probe.py [--frames 76000]

Times the shipped generator's inference stack (``SynthesisGenerator._network_inference``, float32, one thread)
against the same stack with every weight and activation in bfloat16 (the matrix products on the CPU's bf16 units
where it has them, e.g. AMX), on the same random inputs, and prints how far the bf16 raw outputs move. A probe, not a
render path: see docs/RESULTS.md for why it is not used.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

INSTRUMENT = torch.tensor(0)


def bf16_stack(generator):
    """A function [T, F] float32 features -> [T, outputs] float32 raw outputs (instrument 0): the generator's own
    inference stack (``_network_inference``) on a copy of it whose weights are bfloat16, fed bfloat16."""
    stack = copy.deepcopy(generator).to(torch.bfloat16)
    return lambda inputs: stack._network_inference(inputs.to(torch.bfloat16), INSTRUMENT).float()


def main() -> None:
    from mididdsp.render import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=76000, help="frames of one call (76 000: a 5-minute voice)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = load_model().torch_module("generator")
    n_features = generator.input.weight.shape[1] - generator.embedding.weight.shape[1]
    inputs = torch.randn(args.frames, n_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = generator._network_inference(inputs, INSTRUMENT)
        run = bf16_stack(generator)
        error = (run(inputs) - reference).abs()
        times = {}
        for name, function in (("float32", lambda: generator._network_inference(inputs, INSTRUMENT)), ("bfloat16", lambda: run(inputs))):
            function()
            samples = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                function()
                samples.append(time.perf_counter() - started)
            times[name] = statistics.median(samples)
    print(f"{args.frames} frames, one thread: float32 {1000 * times['float32']:.0f} ms, bfloat16 "
          f"{1000 * times['bfloat16']:.0f} ms ({times['float32'] / times['bfloat16']:.2f}x)")
    print(f"raw outputs: |bf16 - fp32| mean {error.mean():.4f}, max {error.max():.3f} (their std {reference.std():.2f});"
          f" the f0 head's max moves f0 by up to {50 * error[:, 4].max():.1f} cents before its smoothing")


if __name__ == "__main__":
    main()
