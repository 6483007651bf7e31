"""Training callbacks: atomic checkpoint files, a non-finite loss/gradient guard, and validation examples
(input vs resynthesis WAVs and a PNG of spectrograms and controls)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from mididdsp.errors import MididdspError
from mididdsp.fileio import atomic_open, atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file in the same folder, fsynced, then renamed over the target: a process
    killed at any moment (even ``kill -9`` mid-save) leaves the previous checkpoint whole, plus at most a stray
    temp file that :func:`mididdsp.fileio.remove_temp_files` deletes on the next run. Local paths only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_open(path, "wb", durable=True) as file:
            torch.save(checkpoint, file)


class NonFiniteGuard(pl.Callback):
    """Stops training with one clear :class:`MididdspError` naming the step when the loss or the gradients
    are NaN/inf. Checked before the optimizer step, so the weights and the last checkpoint stay finite.

    With float16 mixed precision the gradient scaler produces inf gradients on purpose (it then skips the step
    and lowers its scale), so only the loss is checked there.
    """

    def __init__(self, check_gradients: bool = True) -> None:
        self.check_gradients = check_gradients

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step + 1  # the step being taken (global_step counts finished steps)
        loss = getattr(pl_module, "last_loss", None)
        gradients = [p.grad for p in pl_module.parameters() if p.grad is not None]
        norm = (torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in gradients]))
                if gradients else None)
        # one host read per step for both checks (on an accelerator each bool() waits for the device)
        checks = ([torch.isfinite(loss).all()] if loss is not None else []) + (
            [torch.isfinite(norm)] if norm is not None and self.check_gradients else [])
        if checks and not bool(torch.stack(checks).all()):
            if loss is not None and not bool(torch.isfinite(loss)):
                raise MididdspError(f"training stopped at step {step}: the loss is {float(loss)} (not finite); "
                                    "lower train.lr or train.grad_clip, or check the data for silent/broken audio")
            bad = next(name for name, p in pl_module.named_parameters()
                       if p.grad is not None and not bool(torch.isfinite(p.grad).all()))
            raise MididdspError(f"training stopped at step {step}: the gradient of {bad} is not finite "
                                f"(loss {float(loss) if loss is not None else 'unknown'}); lower train.lr or "
                                "train.grad_clip, or check the data")
        if norm is not None:
            pl_module.log("grad_norm", norm, batch_size=1)


class FinalCheckpoint(pl.Callback):
    """Saves ``path`` (last.ckpt) when training ends normally; the periodic one may be up to checkpoint_every
    steps behind. Not called when training stops on an error, so a diverged run keeps its last good state."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class ExampleWriter(pl.Callback):
    """After each validation (rank 0): ``examples/step_NNNNNNN/example_K_{input,resynth}.wav`` and
    ``example_K.png`` in ``run_dir``, from the first validation batch kept by the module."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        example = getattr(pl_module, "validation_example", None)
        pl_module.validation_example = None
        if trainer.sanity_checking or not trainer.is_global_zero or not example:
            return
        from mididdsp.audio import save_audio

        folder = self.run_dir / "examples" / f"step_{trainer.global_step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(example["input"].shape[0]):
            save_audio(folder / f"example_{index}_input.wav", example["input"][index].numpy())
            save_audio(folder / f"example_{index}_resynth.wav", example["output"][index].numpy())
            title = example["id"][index] if index < len(example.get("id", [])) else f"example {index}"
            plot_example(folder / f"example_{index}.png", example["input"][index].numpy(),
                         example["output"][index].numpy(),
                         {name: example[name][index].numpy() for name in
                          ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")},
                         f"{title} (step {trainer.global_step})")


def plot_example(path: str | Path, input_audio: np.ndarray, output_audio: np.ndarray, controls: dict[str, np.ndarray],
                 title: str = "", sample_rate: int = 16000, frame_rate: int = 250) -> None:
    """PNG: input and resynthesis spectrograms, f0 + amplitude, harmonic distribution, noise magnitudes.

    Args:
        input_audio, output_audio: [samples].
        controls: ``f0_hz`` [frames] or [frames, 1] (Hz), ``amplitude`` [frames, 1] (linear),
            ``harmonic_distribution`` [frames, n_harmonics] (sums to 1), ``noise_magnitudes`` [frames, bands].
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend (renders with Agg)

    path = Path(path)
    figure = Figure(figsize=(10, 11), layout="constrained")
    axes = figure.subplots(5, 1)
    duration = len(input_audio) / sample_rate
    for axis, audio, name in ((axes[0], input_audio, "input"), (axes[1], output_audio, "resynthesis")):
        with np.errstate(divide="ignore"):  # a silent crop has empty bins: they draw at vmin, not as a warning
            axis.specgram(audio.astype(np.float64), NFFT=512, Fs=sample_rate, noverlap=448, cmap="magma",
                          vmin=-130)
        axis.set(title=name, ylabel="Hz", xlim=(0, duration))
    frames = np.arange(len(controls["f0_hz"])) / frame_rate
    axes[2].plot(frames, np.reshape(controls["f0_hz"], -1), color="C0")
    axes[2].set(ylabel="f0 (Hz)", xlim=(0, duration), title="f0 and amplitude")
    level = axes[2].twinx()
    level.plot(frames, 20 * np.log10(np.maximum(np.reshape(controls["amplitude"], -1), 1e-7)), color="C1")
    level.set_ylabel("amplitude (dB)", color="C1")
    extent = (0, frames[-1] if len(frames) else 0, 0.5, None)
    harmonics = controls["harmonic_distribution"]
    axes[3].imshow(np.log10(np.maximum(harmonics.T, 1e-7)), aspect="auto", origin="lower", vmin=-5, vmax=0,
                   extent=(extent[0], extent[1], 0.5, harmonics.shape[1] + 0.5), cmap="viridis")
    axes[3].set(title="harmonic distribution (log10)", ylabel="harmonic")
    noise = controls["noise_magnitudes"]
    axes[4].imshow(20 * np.log10(np.maximum(noise.T, 1e-7)), aspect="auto", origin="lower", vmin=-100, vmax=0,
                   extent=(extent[0], extent[1], 0, sample_rate / 2), cmap="viridis")
    axes[4].set(title="noise magnitudes (dB)", ylabel="Hz", xlabel="time (s)")
    if title:
        figure.suptitle(title)
    with atomic_path(path, suffix=".png") as temp:
        figure.savefig(temp, dpi=80, format="png")
