"""Synth speed: 60 s of audio (60 harmonics + 65 noise bands + 3 s reverb, batch 1), and a training-shaped pass
(forward + backward of synth + multi-scale spectral loss, batch 8 x 4 s).

Each is compared with a straightforward eager implementation measured in the same run (controls upsampled to
audio rate, one sine tensor of [batch, samples, harmonics], noise filtered frame by frame and folded back, reverb
by one FFT convolution, loss through torch.stft and autograd).  Run: ``python benchmarks/bench_synth.py``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_seconds, table  # noqa: E402

from mididdsp.dsp import DDSPSynth, frequency_impulse_response, multiscale_spectral_loss, n_frames  # noqa: E402
from mididdsp.dsp.core import fft_convolve  # noqa: E402

torch.set_num_threads(2)
SR, HOP = 16000, 64


def reference_synth(controls, n_samples, impulse_response):
    """The straightforward DDSP recipe in eager PyTorch."""
    f0 = controls["f0_hz"]
    batch, frames = f0.shape
    up = lambda x: F.interpolate(x.transpose(1, 2), size=n_samples, mode="linear", align_corners=True).transpose(1, 2)
    harmonics = controls["harmonic_distribution"].shape[-1]
    k = torch.arange(1, harmonics + 1, dtype=f0.dtype)
    mask = (f0.unsqueeze(-1) * k < SR / 2).to(f0.dtype)
    distribution = controls["harmonic_distribution"] * mask
    distribution = distribution / distribution.sum(-1, keepdim=True).clamp_min(1e-7)
    amplitudes = up(controls["amplitude"].unsqueeze(-1) * distribution)
    f0_audio = up(f0.unsqueeze(-1))[..., 0]
    phase = 2 * math.pi * torch.cumsum(f0_audio.double() / SR, -1)
    phase = torch.remainder(phase, 2 * math.pi).float()
    harmonic = (torch.sin(phase.unsqueeze(-1) * k) * amplitudes).sum(-1)
    segments = n_samples // HOP
    impulse_responses = frequency_impulse_response(controls["noise_magnitudes"][:, :segments])
    noise = torch.rand(batch, segments, HOP) * 2 - 1
    size = HOP + impulse_responses.shape[-1] - 1
    filtered = torch.fft.irfft(torch.fft.rfft(noise, 256) * torch.fft.rfft(impulse_responses, 256), 256)[..., :size]
    length = (segments - 1) * HOP + size
    noise_audio = F.fold(filtered.transpose(1, 2), (1, length), (1, size), stride=(1, HOP)).reshape(batch, length)
    dry = harmonic + noise_audio[:, 64:64 + n_samples]
    return dry + fft_convolve(dry, impulse_response)[:, :n_samples]


def reference_loss(audio, target):
    loss = 0.0
    for n_fft in (2048, 1024, 512, 256, 128, 64):
        window = torch.hann_window(n_fft)
        spec = lambda x: torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs()
        a, t = spec(audio), spec(target)
        loss = loss + (a - t).abs().mean() + (torch.log(a + 1e-5) - torch.log(t + 1e-5)).abs().mean()
    return loss


def controls_for(batch, n_samples, requires_grad=False):
    frames = n_frames(n_samples)
    generator = torch.Generator().manual_seed(0)
    controls = {
        "f0_hz": 110 * 2 ** (torch.rand(batch, 1, generator=generator) * 3) * torch.ones(batch, frames),
        "amplitude": torch.rand(batch, frames, generator=generator) * 0.2,
        "harmonic_distribution": torch.rand(batch, frames, 60, generator=generator),
        "noise_magnitudes": torch.rand(batch, frames, 65, generator=generator) * 0.01,
    }
    if requires_grad:
        for name in ("amplitude", "harmonic_distribution", "noise_magnitudes"):
            controls[name].requires_grad_(True)
    return controls


def main() -> None:
    rows = []
    synth = DDSPSynth(reverb="learned", reverb_seconds=3.0)
    impulse_response = synth.reverb.get_impulse_response().detach()

    n_samples = 60 * SR
    controls = controls_for(1, n_samples)
    controls["f0_hz"].fill_(110.0)  # a low note: all 60 harmonics below Nyquist (the expensive case)
    with torch.no_grad():
        ours = median_seconds(lambda: synth.render(controls, n_samples), repeats=5)
        one_piece = median_seconds(lambda: synth.synthesize(controls, n_samples), repeats=5)
        reference = median_seconds(lambda: reference_synth(controls, n_samples, impulse_response), repeats=3)
    for name, seconds in (("render (1 s chunks)", ours), ("synthesize (one piece)", one_piece),
                          ("straightforward reference", reference)):
        rows.append({"case": f"60 s synth, f0 110 Hz: {name}", "median s": f"{seconds:.3f}",
                     "x real time": f"{60 / seconds:.0f}", "speed-up vs reference": f"{reference / seconds:.1f}"})

    batch, n_samples = 8, 64000
    target = torch.randn(batch, n_samples) * 0.1

    def ours_step():
        controls = controls_for(batch, n_samples, requires_grad=True)
        audio = synth.synthesize(controls, n_samples)["audio"]
        multiscale_spectral_loss(audio, target).backward()

    def reference_step():
        controls = controls_for(batch, n_samples, requires_grad=True)
        reference_loss(reference_synth(controls, n_samples, impulse_response), target).backward()

    ours = median_seconds(ours_step, repeats=5)
    reference = median_seconds(reference_step, repeats=3)
    for name, seconds in (("ours", ours), ("straightforward reference", reference)):
        rows.append({"case": f"train pass 8 x 4 s (fwd+bwd synth + loss): {name}", "median s": f"{seconds:.3f}",
                     "x real time": f"{32 / seconds:.0f}", "speed-up vs reference": f"{reference / seconds:.1f}"})
    print(table(rows, ["case", "median s", "x real time", "speed-up vs reference"]))


if __name__ == "__main__":
    main()
