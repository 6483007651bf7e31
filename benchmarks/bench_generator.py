"""Synthesis generator speed: a 60 s voice (240 notes of 0.25 s) through the generator in one pass, beside the
synthesizer rendering the same controls, in the same run (2 threads, medians of 5).

The target (issue 10): the generator >= 300x real time, so that rendering stays bound by the synthesizer.
MIDI-DDSP's frame-autoregressive f0 runs 2.5-5x SLOWER than real time on a GPU. Uses the shipped generator when
it is installed (random weights otherwise: the cost does not depend on the values).
Run: ``python benchmarks/bench_generator.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, table  # noqa: E402

from mididdsp.dsp import n_frames  # noqa: E402
from mididdsp.synthesis.generator import SynthesisGenerator, generate_voice  # noqa: E402

torch.set_num_threads(2)
SECONDS = 60.0


def load_generator() -> tuple[SynthesisGenerator, str]:
    from mididdsp.render import PRETRAINED_MIDI

    if (PRETRAINED_MIDI / "generator").is_dir():
        from mididdsp.models import load_model

        return load_model(PRETRAINED_MIDI / "generator"), "shipped"
    ranges = {name: [0.0, 1.0] for name in ("volume", "volume_fluctuation", "volume_peak_position", "vibrato",
                                             "brightness", "attack_noise")}
    return SynthesisGenerator({"ranges": ranges}).eval(), "random weights"


def main() -> None:
    model, which = load_generator()
    count = int(SECONDS / 0.25)
    starts = torch.arange(count) * 0.25
    notes = torch.stack([starts, starts + 0.23, 60 + (torch.arange(count) * 5 % 14).float(),
                         torch.full((count,), 90.0)], -1)
    expression = torch.rand(count, 7, generator=torch.Generator().manual_seed(0))
    expression[:, 6] = 5.5
    samples = int(SECONDS * 16000)
    frames = n_frames(samples)
    controls = generate_voice(model, notes, expression, 0, frames, seed=0)
    generator_s = median_seconds(lambda: generate_voice(model, notes, expression, 0, frames, seed=0))
    synth_s = median_seconds(lambda: model.synth.render(controls, samples, generator=torch.Generator().manual_seed(0)),
                             repeats=3)
    rows = [{"stage": "generator (notes + expression -> controls)", "median s": f"{generator_s:.3f}",
             "x real time": f"{SECONDS / generator_s:.0f}"},
            {"stage": "synthesizer (controls -> audio, reverb)", "median s": f"{synth_s:.3f}",
             "x real time": f"{SECONDS / synth_s:.0f}"}]
    print(f"60 s voice, {count} notes, {which} generator, 2 threads")
    print(table(rows, ["stage", "median s", "x real time"]))
    print(f"generator / synthesizer time: {generator_s / synth_s:.2f}")


if __name__ == "__main__":
    main()
