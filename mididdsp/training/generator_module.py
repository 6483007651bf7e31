"""Training the synthesis generator (``mididdsp train synthesis_generator data.dir=PREPARED``).

Data: windows of the prepared recordings that have notes, with the teacher targets of
:mod:`mididdsp.datasets.teacher` (the synthesis coder's frame controls on the refined f0, and every note's
expression as ``mididdsp extract`` measures it). The generator is given exactly what it gets when rendering a
MIDI file: the notes and their expression table. No ground-truth f0 or loudness goes in.

Loss (each term logged by name, weights in ``train.loss_weights``): losses on the controls against the teacher:
level (L1 in dB), noise bands (L1 in dB), harmonic distribution (KL divergence), f0 (L1 in cents after a 0.2 s
moving average, so the random vibrato phase is not penalised); the multi-scale spectral loss of the rendered
audio (through DDSPSynth, with the coder's reverb) against the real audio on a crop of each window, played with
the teacher's f0 (``train.spectral_f0``, see :meth:`GeneratorModule.spectral_loss`); and MIDI-DDSP's conditional
multi-scale least-squares adversarial loss with feature matching on the controls without f0
(:mod:`mididdsp.synthesis.discriminator`; ``adversarial``, ``feature_matching``, after
``train.adversarial_start`` steps; ``train.discriminator`` sizes it). f0 learns from its control loss alone: it
reaches the synthesizer detached and the discriminator never sees it. Frames of notes cut by the window edge are
left out of the losses: the per-note statistics that the generator imposes need whole notes. The weights are
measured in docs/realism-notes.md (docs/RESULTS.md has the history).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mididdsp.dsp import DB_FLOOR, FRAME_RATE, HOP_SIZE, amplitude_to_db, hz_to_midi, multiscale_spectral_loss
from mididdsp.errors import MididdspError
from mididdsp.synthesis.discriminator import ControlDiscriminator, DiscriminatorConfig, control_features, pool_frames
from mididdsp.synthesis.generator import (N_FEATURES, GeneratorConfig, SynthesisGenerator, frame_layout,
                                          note_neighbours)
from mididdsp.training.data import StepSampler, mix_seed
from mididdsp.training.module import EXAMPLE_KEYS, ExponentialDecay, adam_with_decay, logging_step, seeded

DATA_DEFAULTS = {"teacher": None, "window_seconds": 6.0, "spectral_seconds": 1.0}
TRAIN_DEFAULTS = {"loss_weights": {"spectral": 0.0, "level": 0.1, "noise": 0.05, "harmonics": 1.0, "f0": 0.02,
                                   "adversarial": 0.0, "feature_matching": 0.0},
                  "spectral_f0": "teacher", "adversarial_start": 0, "discriminator": {}}
SPECTRAL_F0 = ("teacher", "generator")  # whose f0 plays the generator's other controls for the spectral loss
F0_SMOOTHING = 51  # frames (0.2 s): longer than a vibrato cycle
F0_ROBUST_CENTS = 100.0  # larger f0 errors count as this much, with no gradient
# the noise bands' loss sees down to this (the extractor's -80 dB floor hid the 10-25 dB of excess hiss that a
# log-mel comparison of renders with their recordings showed: benchmarks/eval_realism.py)
NOISE_FLOOR_DB = -100.0
WINDOW_MARGIN_FRAMES = 0.02  # see window_notes


# --- data --------------------------------------------------------------------------------------------------------
class TeacherWindows(Dataset):
    """Windows of ``window_frames`` frames starting a little before a note's onset, with every note of the
    recording (the generator needs the whole voice around the window), the note table and the teacher's
    controls. ``random``: item ``number`` draws its recording and note from a seed made of it (exact resume);
    otherwise items are consecutive windows over every recording (validation)."""

    def __init__(self, data_dir: Path, teacher: Path, split: str, window_frames: int, seed: int = 0,
                 random: bool = True) -> None:
        from mididdsp.datasets.shards import load_manifest
        from mididdsp.datasets.teacher import load_teacher

        manifest = load_manifest(data_dir)
        self.instruments = manifest["instruments"]
        self.data_dir, self.window_frames, self.seed, self.random = data_dir, window_frames, seed, random
        self.recordings = []
        for recording in manifest["recordings"]:
            if recording["split"] != split or not recording["has_notes"]:
                continue
            try:
                arrays = load_teacher(teacher, recording["id"])
            except MididdspError:
                continue
            if len(arrays["notes"]) == 0:
                continue
            self.recordings.append((recording, arrays))
        # per-recording inputs, once (they were rebuilt for every item: note_targets and a float32 copy of the
        # whole harmonic distribution each time): notes [N, 4] and expression [N, 8] float32, never written to
        self._notes = [torch.from_numpy(arrays["notes"].astype(np.float32)) for _, arrays in self.recordings]
        self._expression = [torch.from_numpy(_note_expression(arrays)) for _, arrays in self.recordings]
        self._onsets = [np.floor(arrays["notes"][:, 0] * 250 + 0.5) for _, arrays in self.recordings]
        self._shards: dict = {}
        self.items = []
        if not random:
            for index, (recording, _) in enumerate(self.recordings):
                self.items += [(index, start) for start in range(0, max(1, recording["n_frames"] - window_frames // 2),
                                                                  window_frames)]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_shards": {}}  # DataLoader workers open their own memory maps

    def __len__(self) -> int:
        return max(len(self.recordings), 1) * 8 if self.random else len(self.items)

    def __getitem__(self, number: int) -> dict:
        if self.random:
            rng = np.random.default_rng(mix_seed(self.seed, number))
            index = int(rng.integers(len(self.recordings)))
            onsets = self._onsets[index]
            onset = int(onsets[int(rng.integers(len(onsets)))])
            start = max(0, onset - int(rng.integers(5, 60)))
        else:
            index, start = self.items[number]
        return self.window(index, start)

    def window(self, index: int, start: int) -> dict:
        """Item of recording ``index`` from frame ``start``: ``audio`` [(F - 1) * 64] float32, ``start_frame`` [],
        ``notes`` [N, 4] (start s, end s, pitch, velocity), ``expression`` [N, 8], ``instrument`` [], teacher frame
        controls ``f0_hz``, ``amplitude`` [F] / [F, 1], ``harmonic_distribution`` [F, K], ``noise_magnitudes``
        [F, M] (0 past the recording's end), ``mask`` [F] (1 inside the recording) and ``id``; F = window_frames."""
        from mididdsp.datasets.shards import open_shard

        recording, teacher = self.recordings[index]
        total = int(recording["n_frames"])
        frames = self.window_frames
        real = max(0, min(frames, total - start))

        def frame_slice(values: np.ndarray, fill: float) -> torch.Tensor:
            out = np.full((frames, *values.shape[1:]), fill, np.float32)
            out[:real] = values[start:start + real]  # converts only the window's rows to float32
            return torch.from_numpy(out)

        shard = self._shards.get(index)
        if shard is None:  # opened once per recording and process (memory-mapped: a window reads only its slice)
            shard = self._shards[index] = open_shard(self.data_dir / recording["shard"])
        n_samples = (frames - 1) * HOP_SIZE
        audio = np.zeros(n_samples, np.float32)
        piece = np.asarray(shard["audio"][start * HOP_SIZE:start * HOP_SIZE + n_samples], np.float32)
        audio[:len(piece)] = piece * float(shard["audio_scale"])
        mask = np.zeros(frames, np.float32)
        mask[:real] = 1.0
        return {"audio": torch.from_numpy(audio), "start_frame": torch.tensor(start),
                "notes": self._notes[index], "expression": self._expression[index],
                "instrument": torch.tensor(self.instruments[recording["instrument"]]),
                "f0_hz": frame_slice(teacher["f0_hz"], 0.0), "amplitude": frame_slice(teacher["amplitude"], 0.0),
                "harmonic_distribution": frame_slice(teacher["harmonic_distribution"], 0.0),
                "noise_magnitudes": frame_slice(teacher["noise_magnitudes"], 0.0), "mask": torch.from_numpy(mask),
                "id": recording["id"]}


def _note_expression(arrays: dict) -> np.ndarray:
    """A recording's generator input per note, [N, 8] float32 (the teacher targets with the level offset)."""
    from mididdsp.datasets.teacher import note_targets

    expression, _ = note_targets(arrays, with_offset=True)  # levels relative to the recording, and its offset
    return expression.astype(np.float32)


def collate(items: list[dict]) -> dict:
    """Stack items; notes [B, N, 4] and expression [B, N, 8] are zero-padded to the longest note list N, with
    ``note_mask`` [B, N] (True on real notes), each in one call (no per-item pad-and-concatenate copies);
    strings (``id``) become lists."""
    batch: dict = {}
    counts = [item["notes"].shape[0] for item in items]
    longest = max(counts)
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], str):
            batch[key] = values
        elif key in ("notes", "expression"):
            batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True)  # one copy, zero padding
        else:
            batch[key] = torch.stack(values)
    batch["note_mask"] = torch.arange(longest) < torch.tensor(counts).unsqueeze(1)
    return batch


class GeneratorData(pl.LightningDataModule):
    """Training windows (seeded by step: exact resume) and validation windows; see :class:`TeacherWindows`."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        from mididdsp.datasets.shards import load_manifest
        from mididdsp.datasets.teacher import ensure_teacher, teacher_info
        from mididdsp.resynth import SHIPPED_CODER

        data_cfg, train_cfg = config["data"], config["train"]
        self.data_dir = Path(data_cfg["dir"])
        coder = Path(data_cfg.get("teacher") or SHIPPED_CODER)
        self.teacher = ensure_teacher(self.data_dir, coder)
        info = teacher_info(self.teacher)
        manifest = load_manifest(self.data_dir)
        self.instruments: dict[str, int] = manifest["instruments"]
        self.statistics: dict = manifest["statistics"]
        self.ranges = info["expression_ranges"]
        self.coder = coder
        self.export_extra = {"expression_ranges": self.ranges,
                             "teacher": {"coder": str(coder), "cache": str(self.teacher)}}
        self.batch_size, self.num_workers = int(data_cfg["batch_size"]), int(data_cfg["num_workers"])
        self.window_frames = int(round(float(data_cfg["window_seconds"]) * 250)) + 1
        self.seed = int(train_cfg["seed"])
        self.datasets: dict[str, TeacherWindows] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, random in (("train", True), ("valid", False)):
            if split not in self.datasets:
                self.datasets[split] = TeacherWindows(self.data_dir, self.teacher, split, self.window_frames,
                                                      self.seed, random)
        if not self.datasets["train"].recordings:
            raise MididdspError(f"{self.data_dir}: no training recordings with notes and teacher targets")

    def has_validation(self) -> bool:
        self.setup()
        return len(self.datasets["valid"]) > 0

    def train_dataloader(self) -> DataLoader:
        self.setup()
        trainer = self.trainer
        start = trainer.global_step if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(self.datasets["train"], batch_size=self.batch_size, collate_fn=collate,
                          sampler=StepSampler(self.batch_size, start, rank, world), num_workers=self.num_workers,
                          pin_memory=_pin_memory(trainer))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.datasets["valid"], batch_size=self.batch_size, collate_fn=collate,
                          num_workers=self.num_workers, pin_memory=_pin_memory(self.trainer),
                          persistent_workers=self.num_workers > 0)  # validation recurs: keep its workers


def _pin_memory(trainer: pl.Trainer | None) -> bool:
    """Page-locked batches (faster, asynchronous copies) when the trainer runs on a CUDA device."""
    from mididdsp.training.module import on_cuda

    return on_cuda(trainer)


# --- module ------------------------------------------------------------------------------------------------------
class GeneratorModule(pl.LightningModule):
    """Wraps :class:`SynthesisGenerator`; ``compute_losses`` holds the maths (usable without a trainer).

    With ``train.loss_weights.adversarial`` or ``feature_matching`` above 0 the module also holds a
    :class:`ControlDiscriminator` (``self.discriminator``, outside ``self.model``: it is saved in checkpoints, so a
    resumed run continues exactly, and never exported). Generator and discriminator are updated together by one
    optimizer step (two parameter groups, each clipped on its own): the discriminator's loss sees the generated
    controls detached, and the generator's adversarial and feature-matching losses see the discriminator through
    detached weights, so each network gets only its own gradient. One step per batch keeps the trainer's step
    counter, learning-rate schedule, data order and checkpoints exactly as without the adversarial loss."""

    def __init__(self, model_config: dict, train_config: dict, data_config: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = SynthesisGenerator(dict(model_config))
        self.train_config, self.data_config = dict(train_config), dict(data_config)
        self.weights = {**TRAIN_DEFAULTS["loss_weights"], **(self.train_config.get("loss_weights") or {})}
        self.spectral_frames = int(round(float(data_config.get("spectral_seconds", 1.0)) * 250))
        self.spectral_f0 = str(self.train_config.get("spectral_f0", TRAIN_DEFAULTS["spectral_f0"]))
        if self.spectral_f0 not in SPECTRAL_F0:
            raise MididdspError(f"train.spectral_f0={self.spectral_f0!r}: expected one of {', '.join(SPECTRAL_F0)}")
        self.adversarial_start = int(self.train_config.get("adversarial_start", 0))
        self.discriminator: ControlDiscriminator | None = None
        if self.weights["adversarial"] > 0 or self.weights["feature_matching"] > 0:
            config = self.model.config
            try:
                settings = DiscriminatorConfig.from_dict(self.train_config.get("discriminator"))
            except (TypeError, ValueError) as error:
                raise MididdspError(f"train.discriminator: {error}") from None
            self.discriminator = ControlDiscriminator(1 + config.n_harmonics + config.n_noise_bands,
                                                      N_FEATURES, config.n_instruments, settings)
        self.seed = int(self.train_config.get("seed", 0))
        self.last_loss: torch.Tensor | None = None
        self.validation_example: dict | None = None

    def adversarial_active(self) -> bool:
        """Whether this step trains with the discriminator: in training, after ``train.adversarial_start`` steps
        of control (and spectral) losses alone, so that it first judges a generator already near the teacher."""
        return self.discriminator is not None and self.training and self.global_step >= self.adversarial_start

    def compute_losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The weighted losses of one batch (each term by name, their weighted sum as ``loss``; with the
        discriminator active also ``discriminator``, its own least-squares loss, added to ``loss`` unweighted,
        and the mean scores ``score_real`` / ``score_fake`` for the logs).

        Always float32, also under ``train.precision=bf16-mixed``: the generator's note statistics scatter its
        network's outputs into float32 sums (in bf16 autocast that fails), the DSP and the losses need float32,
        and the network (0.1 M parameters) is too small for bf16 to pay (README, training on a GPU)."""
        with torch.autocast(device_type=batch["f0_hz"].device.type, enabled=False):
            return self._compute_losses(batch, generator)

    def _compute_losses(self, batch: dict, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        frames = batch["f0_hz"].shape[1]
        adversarial = self.adversarial_active()
        # the whole batch in one call: each row's notes in times from its own window start, so every row is
        # generated from frame 0 (the model takes one start frame per call; per-row calls cost B times the kernel
        # launches, and int(start) a host sync each on an accelerator)
        notes, note_mask = window_notes(batch["notes"], batch["start_frame"]), batch["note_mask"]
        out = self.model(notes, note_mask, batch["expression"], batch["instrument"], frames, 0, generator)
        # frames of notes cut by the window edges carry inexact note statistics
        layout = frame_layout(notes, note_mask, frames, 0)
        index = layout.note.clamp_min(0)
        whole = (layout.first.gather(1, index) >= 0) & (layout.stop.gather(1, index) <= frames)
        valid = (batch["mask"] > 0) & (whole | (layout.note < 0))
        if adversarial:  # the discriminator's condition: the generator's own per-frame note features
            condition = self.model.features(notes, note_neighbours(notes, note_mask), batch["expression"], layout)
        weight = valid.float()
        active = (out["active"] & valid).float()
        losses: dict[str, torch.Tensor] = {}
        level = amplitude_to_db(out["amplitude"], DB_FLOOR)
        losses["level"] = _masked_mean((level - amplitude_to_db(batch["amplitude"], DB_FLOOR)).abs(), weight)
        noise = amplitude_to_db(out["noise_magnitudes"], NOISE_FLOOR_DB)
        target_noise = amplitude_to_db(batch["noise_magnitudes"], NOISE_FLOOR_DB)
        losses["noise"] = _masked_mean((noise - target_noise).abs().mean(-1), weight)
        target_h = batch["harmonic_distribution"].clamp_min(0)
        target_h = target_h / target_h.sum(-1, keepdim=True).clamp_min(1e-7)
        kl = (target_h * (torch.log(target_h + 1e-7) - torch.log(out["harmonic_distribution"] + 1e-7))).sum(-1)
        losses["harmonics"] = _masked_mean(kl, active)
        cents = 100 * (hz_to_midi(out["f0_hz"]) - hz_to_midi(batch["f0_hz"].clamp_min(1.0)))
        smooth = torch.nn.functional.avg_pool1d(cents.unsqueeze(1), F0_SMOOTHING, 1, F0_SMOOTHING // 2,
                                                count_include_pad=False).squeeze(1)
        # robust: beyond a semitone the teacher is a tracking error or a glide the notes do not describe, and
        # letting those frames pull the drift made the f0 error grow during training (16 -> 24 cents in 400 steps)
        losses["f0"] = _masked_mean(smooth.abs().clamp_max(F0_ROBUST_CENTS), active)
        if adversarial:
            losses.update(self.adversarial_losses(out, batch, condition, weight))
        # spectral loss on a crop of each window: the synthesizer (with the coder's reverb) against the audio
        # (computed in training only when it is weighted; always in validation, where it is the figure to watch)
        if not self.training or self.weights["spectral"]:
            losses["spectral"] = self.spectral_loss(out, batch, generator)
        losses["loss"] = sum(self.weights[name] * value for name, value in losses.items() if name in self.weights)
        if "discriminator" in losses:
            losses["loss"] = losses["loss"] + losses["discriminator"]
        return losses

    def spectral_loss(self, out: dict[str, torch.Tensor], batch: dict,
                      generator: torch.Generator | None) -> torch.Tensor:
        """Multi-scale spectral loss of the generator's controls rendered on a ``spectral_seconds`` crop of each
        window against the recording (scalar); keeps the crop in ``self._crop`` for the validation examples.

        Which f0 plays the crop (``train.spectral_f0``): ``teacher`` (default) the recording's refined f0 where it
        has one (the generator's elsewhere), so that the partials of render and recording line up and the loss
        compares level, harmonic distribution and noise, the controls it is meant to teach. With the generator's
        f0 (``generator``), its random vibrato phase, drift and glides put the render's partials beside the
        recording's at high harmonics, and the loss is dominated by that mismatch: measured in docs/realism-notes.md.
        Either way f0 reaches the synthesizer detached: its spectral gradient points nowhere useful (a known DDSP
        pitfall; measured here: with it the f0 error grew from 10 to 60-90 cents in 40 steps), so f0 learns from
        its control loss alone."""
        frames = batch["f0_hz"].shape[1]
        rows = batch["f0_hz"].shape[0]
        crop = min(self.spectral_frames, frames - 1)
        device = batch["f0_hz"].device
        # one draw for all rows (the same numbers as one draw per row from the same generator), kept on the device
        if frames > crop + 1:
            where = generator.device if generator is not None else device
            offsets = torch.randint(0, frames - crop, (rows,), generator=generator, device=where).to(device)
        else:
            offsets = torch.zeros(rows, dtype=torch.long, device=device)
        played = dict(out)
        if self.spectral_f0 == "teacher":
            played["f0_hz"] = torch.where(batch["f0_hz"] > 0, batch["f0_hz"], out["f0_hz"])
        rows_frames = offsets.unsqueeze(1) + torch.arange(crop + 1, device=device)  # [B, crop + 1]
        controls = {name: _take_rows(played[name], rows_frames) for name in EXAMPLE_KEYS}
        controls["f0_hz"] = controls["f0_hz"].detach()
        n_samples = crop * HOP_SIZE
        target = batch["audio"].gather(1, offsets.unsqueeze(1) * HOP_SIZE + torch.arange(n_samples, device=device))
        audio = self.model.synth.synthesize(controls, n_samples, batch["instrument"], generator=generator)["audio"]
        self._crop = {"controls": controls, "audio": audio, "target": target}
        return multiscale_spectral_loss(audio, target)

    def adversarial_losses(self, out: dict[str, torch.Tensor], batch: dict, condition: torch.Tensor,
                           weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """MIDI-DDSP's conditional least-squares GAN with feature matching, on the controls without f0.

        Args:
            out: the generator's controls (``amplitude`` [B, T], ``harmonic_distribution`` [B, T, K],
                ``noise_magnitudes`` [B, T, M]); batch: the teacher's controls under the same names (the real
                examples: the synthesis coder's reading of the recording); condition: [B, T, N_FEATURES] note
                features; weight: [B, T] 1 on frames that count (inside the recording, notes whole).
        Returns:
            ``adversarial`` (generator: mean (D(fake) - 1)^2), ``feature_matching`` (L1 between the
            discriminator's activations on generated and real controls, per layer and scale), ``discriminator``
            (mean (D(real) - 1)^2 + D(fake)^2 on the generated controls detached) and the mean scores
            ``score_real``, ``score_fake`` (detached). Scores of pooled frames count where all their frames count.
        """
        assert self.discriminator is not None
        instrument = batch["instrument"]
        condition = condition.detach()
        real = control_features(batch["amplitude"], batch["harmonic_distribution"], batch["noise_magnitudes"])
        fake = control_features(out["amplitude"], out["harmonic_distribution"], out["noise_magnitudes"])
        masks = [(pool_frames(weight.unsqueeze(1), s).squeeze(1) > 0.999).float()
                 for s in self.discriminator.config.scales]
        # the discriminator's own loss: its weights get gradient, the generator none (fake detached)
        on_real = self.discriminator(real, condition, instrument)
        on_fake = self.discriminator(fake.detach(), condition, instrument)
        # the generator's losses: through the discriminator with detached weights (no gradient to them)
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        judged = torch.func.functional_call(self.discriminator, frozen, (fake, condition, instrument))
        scales = len(masks)
        d_loss = adv = matching = real_score = fake_score = 0.0
        for mask, (score_real, hidden_real), (score_fake, _), (score_judged, hidden_judged) in zip(
                masks, on_real, on_fake, judged):
            d_loss = d_loss + _masked_mean((score_real - 1) ** 2, mask) + _masked_mean(score_fake ** 2, mask)
            adv = adv + _masked_mean((score_judged - 1) ** 2, mask)
            for a_real, a_fake in zip(hidden_real, hidden_judged):
                matching = matching + _masked_mean((a_fake - a_real.detach()).abs().mean(1), mask) / len(hidden_real)
            real_score = real_score + _masked_mean(score_real.detach(), mask)
            fake_score = fake_score + _masked_mean(score_fake.detach(), mask)
        return {"adversarial": adv / scales, "feature_matching": matching / scales, "discriminator": d_loss / scales,
                "score_real": real_score / scales, "score_fake": fake_score / scales}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step_seed = mix_seed(self.seed, self.global_step * max(1, self.trainer.world_size) + self.global_rank)
        generator = torch.Generator(device=self.device).manual_seed(step_seed)
        with seeded(step_seed, self.device):
            losses = self.compute_losses(batch, generator)
        self.last_loss = losses["loss"].detach()
        if logging_step(self):
            size = batch["audio"].shape[0]
            self.log("train_loss", losses["loss"], prog_bar=True, batch_size=size)
            for name, value in losses.items():
                if name != "loss":
                    self.log(f"train_{name}", value, batch_size=size)
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator(device=self.device).manual_seed(mix_seed(self.seed, -(1 << 40) - batch_idx))
        losses = self.compute_losses(batch, generator)
        size = batch["audio"].shape[0]
        self.log("val_loss", losses["loss"], prog_bar=True, sync_dist=True, batch_size=size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"val_{name}", value, sync_dist=True, batch_size=size)
        count = int(self.train_config.get("examples", 2))
        if batch_idx == 0 and count > 0:
            crop = self._crop
            example = {name: crop["controls"][name][:count].detach().float().cpu() for name in EXAMPLE_KEYS}
            example["input"] = crop["target"][:count].detach().cpu()
            example["output"] = crop["audio"][:count].detach().cpu()
            example["id"] = list(batch.get("id", []))[:count]
            self.validation_example = example
        return losses["loss"]

    def configure_optimizers(self) -> dict:
        if self.discriminator is None:
            return adam_with_decay(self.model, self.train_config)  # the reverb, frozen, is left out
        # one Adam, two groups: the generator's (train.lr) and the discriminator's (train.discriminator.lr), both
        # decayed by the same schedule; a parameter without gradient (the discriminator before
        # adversarial_start) is skipped by Adam, its moments untouched
        generator_parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam([{"params": generator_parameters},
                                      {"params": list(self.discriminator.parameters()),
                                       "lr": float(self.discriminator.config.lr)}], lr=float(self.train_config["lr"]))
        decay = ExponentialDecay(self.train_config.get("lr_decay_rate", 0.98),
                                 self.train_config.get("lr_decay_steps", 10000))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip the generator's and the discriminator's gradients each to ``train.grad_clip`` (norm), so that a
        large discriminator gradient never shrinks the generator's step (and the other way round)."""
        if self.discriminator is None or not gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        for group in optimizer.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            if with_grad:
                torch.nn.utils.clip_grad_norm_(with_grad, float(gradient_clip_val))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.discriminator is not None:  # the generator's own gradient norm (grad_norm covers both networks)
            norms = [p.grad.detach().norm() for p in self.model.parameters() if p.grad is not None]
            if norms and logging_step(self):
                self.log("grad_norm_generator", torch.stack(norms).norm(), batch_size=1)


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def window_notes(notes: torch.Tensor, start_frame: torch.Tensor) -> torch.Tensor:
    """Notes [B, N, 4] (start s, end s, pitch, velocity) -> the same notes in seconds from each row's window
    start ``start_frame`` [B] (frames), float32, such that the model's frame rounding, ``floor(t * 250 + 0.5)``,
    gives exactly the frames of the absolute times minus ``start_frame``: generating from frame 0 with these
    notes is generating from ``start_frame`` with the originals (up to float rounding of the seconds).

    Many note times lie on a half frame (the corpus' 2 ms grid), where the float32 rounding of a plain shift can
    fall on the other side; those times are moved to 0.02 frames (80 us; more for times hours away, where float32
    is coarser) inside the frame the original rounding chose. No host sync (it runs on the batch's device)."""
    notes = notes.float()
    times = notes[..., :2]
    exact = torch.float64 if notes.device.type != "mps" else torch.float32  # MPS has no float64
    shift = start_frame.to(notes.device).unsqueeze(1).unsqueeze(2)
    wanted = torch.floor(times * FRAME_RATE + 0.5).long() - shift  # the model's rounding of the originals
    shifted = (times.to(exact) - shift.to(exact) / FRAME_RATE).float()
    got = torch.floor(shifted * FRAME_RATE + 0.5).long()
    frames = wanted.to(exact)
    margin = WINDOW_MARGIN_FRAMES + frames.abs() * 2.0 ** -20  # 8 float32 steps at that magnitude
    above = ((frames - 0.5 + margin) / FRAME_RATE).float()  # rounds up to ``wanted``
    below = ((frames + 0.5 - margin) / FRAME_RATE).float()  # rounds down to ``wanted``
    shifted = torch.where(got < wanted, above, torch.where(got > wanted, below, shifted))
    return torch.cat([shifted, notes[..., 2:]], dim=-1)


def _take_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [B, T] or [B, T, C], index [B, L] frame numbers -> [B, L] / [B, L, C] (row-wise gather)."""
    if values.dim() == 3:
        return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return values.gather(1, index)


# --- the task interface of mididdsp.training.train ---------------------------------------------------------------
def check_model_config(model_config: dict) -> None:
    """ValueError for unknown settings (the ranges come from the teacher and are filled in by build_data)."""
    GeneratorConfig.from_dict({"ranges": {name: [0.0, 1.0] for name in
                                          ("volume", "volume_fluctuation", "volume_peak_position", "vibrato",
                                           "brightness", "attack_noise")}, **model_config})


def build_data(config: dict) -> GeneratorData:
    data = GeneratorData(config)
    config["model"]["n_instruments"] = max(1, len(data.instruments))
    config["model"]["ranges"] = {name: [float(v) for v in pair] for name, pair in data.ranges.items()}
    config["data"]["teacher"] = str(data.coder)
    return data


def build_module(config: dict) -> GeneratorModule:
    """The module, its synthesizer's reverb taken from the teacher coder (by instrument name) and frozen."""
    module = GeneratorModule(config["model"], config["train"], config["data"])
    reverb = module.model.synth.reverb
    if reverb is not None and hasattr(reverb, "impulse_response"):
        _copy_reverb(module.model, Path(config["data"]["teacher"]), config["data"]["dir"])
        for parameter in reverb.parameters():
            parameter.requires_grad_(False)
    return module


def _copy_reverb(model: SynthesisGenerator, coder_dir: Path, data_dir: str) -> None:
    from mididdsp.datasets.shards import load_manifest
    from mididdsp.models import load_model, model_metadata

    coder = load_model(coder_dir)
    source = getattr(coder.synth.reverb, "impulse_response", None)
    if source is None:
        return
    coder_ids = model_metadata(coder).get("instruments") or {}
    target = model.synth.reverb.impulse_response
    taps = min(source.shape[-1], target.shape[-1])
    with torch.no_grad():
        for name, index in load_manifest(data_dir)["instruments"].items():
            if name in coder_ids:
                target[index, :taps] = source[int(coder_ids[name]), :taps]


def build_model(model_config: dict) -> SynthesisGenerator:
    return SynthesisGenerator(dict(model_config))
