"""A conditional multi-scale discriminator on synthesis controls (MIDI-DDSP's adversarial loss, level 2).

It judges whether a sequence of frame controls (level, harmonic distribution, noise bands) could be the
synthesis coder's reading of a real recording of the given notes, or the generator's output for them. Only the
controls that carry realism beyond the imposed expression go in; **f0 never does**, so the adversarial gradient
cannot reach the generator's pitch (pitch learns from its control loss alone; a spectral or adversarial
gradient on f0 points nowhere useful).

Inputs, one voice per batch row, on the project's 250 Hz frames:

    controls    [B, T, 1 + K + M]  :func:`control_features` of level (dB), harmonic distribution (log) and noise
                                    bands (dB), each scaled to roughly -1..1
    condition   [B, T, F]          per-frame note features (the generator's ``features``: timing inside the note,
                                    pitch, neighbours, the note's expression), no gradient
    instrument  [B]                long

Each scale ``s`` (1, 2, 4 by default) average-pools controls and condition by ``s`` frames and runs its own stack
of dilated 1-D convolutions; it returns a score per pooled frame and the hidden activations (for feature
matching). Plain ``nn.Module``: the training wiring (least-squares losses, masks, updates) lives in
:mod:`mididdsp.training.generator_module`, and the discriminator is never part of an exported model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mididdsp.dsp import DB_FLOOR, amplitude_to_db

LEVEL_CENTRE_DB, LEVEL_SCALE_DB = -40.0, 30.0   # level dB -> (dB - centre) / scale: -80..0 dB -> about -1.3..1.3
NOISE_CENTRE_DB, NOISE_SCALE_DB = -60.0, 30.0
HARMONIC_FLOOR = 1e-6                           # log(h + floor): -13.8 for silent harmonics
HARMONIC_SCALE = 7.0                            # log h / scale: about -2..0


@dataclass
class DiscriminatorConfig:
    """Sizes of :class:`ControlDiscriminator` (``train.discriminator`` of a ``synthesis_generator`` config: the
    discriminator is a training device, not part of the model)."""

    channels: int = 32
    layers: int = 4                     # dilations 1, 2, 4, 8 at each scale: 31 pooled frames seen per score
    kernel_size: int = 3
    scales: list = field(default_factory=lambda: [1, 2, 4])   # average-pooling factors (frames)
    instrument_embedding: int = 8
    lr: float = 1.0e-3                  # Adam rate of the discriminator's parameters (decayed like the generator's)

    @classmethod
    def from_dict(cls, values: dict | None) -> "DiscriminatorConfig":
        from mididdsp.models import settings_from_dict

        config = settings_from_dict(cls, dict(values or {}))
        if not config.scales or any(int(s) < 1 for s in config.scales):
            raise ValueError(f"discriminator.scales={config.scales}: expected positive pooling factors")
        if config.channels < 1 or config.layers < 1 or config.kernel_size < 1:
            raise ValueError("discriminator channels, layers and kernel_size must be positive")
        config.scales = [int(s) for s in config.scales]
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def control_features(amplitude: torch.Tensor, harmonic_distribution: torch.Tensor,
                     noise_magnitudes: torch.Tensor) -> torch.Tensor:
    """The discriminator's view of a voice's controls, without f0.

    Args:
        amplitude: [B, T] linear amplitude; harmonic_distribution: [B, T, K] (sums to 1 per frame);
        noise_magnitudes: [B, T, M] linear band magnitudes.
    Returns:
        [B, T, 1 + K + M]: level (dB), log harmonic distribution and noise bands (dB), each centred and scaled to
        roughly -1..1 (the harmonic distribution in log: the realism of weak upper partials matters as much as
        that of the strong ones, which a linear view would drown).
    """
    level = (amplitude_to_db(amplitude, DB_FLOOR) - LEVEL_CENTRE_DB) / LEVEL_SCALE_DB
    harmonics = torch.log(harmonic_distribution.clamp_min(0) + HARMONIC_FLOOR) / HARMONIC_SCALE
    noise = (amplitude_to_db(noise_magnitudes, DB_FLOOR) - NOISE_CENTRE_DB) / NOISE_SCALE_DB
    return torch.cat([level.unsqueeze(-1), harmonics, noise], dim=-1)


class ScaleDiscriminator(nn.Module):
    """One time scale: 1x1 input projection of [controls, condition, instrument], dilated residual convolutions
    (non-causal, leaky ReLU), a 1x1 score. [B, C_in, T'] -> score [B, T'], hidden activations [B, channels, T']
    after each layer."""

    def __init__(self, in_channels: int, config: DiscriminatorConfig) -> None:
        super().__init__()
        width = config.channels
        self.input = nn.Conv1d(in_channels, width, 1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(width, width, config.kernel_size, dilation=2 ** i, padding=2 ** i * (config.kernel_size // 2))
            for i in range(config.layers))
        self.score = nn.Conv1d(width, 1, 1)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = self.input(inputs)
        activations = []
        for conv in self.blocks:
            hidden = hidden + conv(F.leaky_relu(hidden, 0.2))
            activations.append(hidden)
        return self.score(F.leaky_relu(hidden, 0.2)).squeeze(1), activations


class ControlDiscriminator(nn.Module):
    """Conditional multi-scale discriminator on synthesis controls (see the module docstring)."""

    def __init__(self, n_controls: int, n_condition: int, n_instruments: int,
                 config: DiscriminatorConfig | dict | None = None) -> None:
        super().__init__()
        config = config if isinstance(config, DiscriminatorConfig) else DiscriminatorConfig.from_dict(config)
        self.config = config
        self.n_controls, self.n_condition = int(n_controls), int(n_condition)
        self.embedding = nn.Embedding(max(1, int(n_instruments)), config.instrument_embedding)
        in_channels = self.n_controls + self.n_condition + config.instrument_embedding
        self.scales = nn.ModuleList(ScaleDiscriminator(in_channels, config) for _ in config.scales)

    def forward(self, controls: torch.Tensor, condition: torch.Tensor, instrument: torch.Tensor
                ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Per scale (in ``config.scales`` order): the score [B, ceil(T / s)] (least-squares target 1 for real,
        0 for generated) and the hidden activations [B, channels, ceil(T / s)] of each layer.

        Args:
            controls: [B, T, n_controls] from :func:`control_features`; condition: [B, T, n_condition];
            instrument: [B] long.
        """
        if controls.shape[:2] != condition.shape[:2]:
            raise ValueError(f"controls {tuple(controls.shape)} and condition {tuple(condition.shape)} must share "
                             "[batch, frames]")
        frames = controls.shape[1]
        embedding = self.embedding(instrument).unsqueeze(1).expand(-1, frames, -1)
        inputs = torch.cat([controls, condition, embedding], dim=-1).transpose(1, 2)   # [B, C_in, T]
        return [scale(pool_frames(inputs, factor)) for factor, scale in zip(self.config.scales, self.scales)]


def pool_frames(values: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool [B, C, T] over non-overlapping groups of ``factor`` frames -> [B, C, ceil(T / factor)] (the
    last group may be partial: padding is not counted)."""
    if factor == 1:
        return values
    return F.avg_pool1d(values, factor, factor, ceil_mode=True, count_include_pad=False)
