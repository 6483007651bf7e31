"""Audio -> frame-level synthesis controls -> audio: the DDSP autoencoder and MIDI-DDSP's synthesis coder.

One configurable module covers both (choose by config):

* DDSP autoencoder: f0 and loudness (+ optionally a per-frame latent z from MFCCs through a GRU) + an instrument
  embedding -> a unidirectional GRU decoder with MLP stacks -> controls. ``hidden_size: 256, mlp_layers: 0,
  encoder: none`` is the tiny model (0.24 M parameters; 0.39 M with ``frames_per_step: 4``, whose head writes 4
  frames per step); ``hidden_size: 512, mlp_layers: 3, encoder: mfcc`` is the published size.
* Synthesis coder: log-mel frames through a small 1-D CNN, with f0 and loudness -> a bidirectional GRU ->
  controls (``encoder: logmel, bidirectional: true``). It sees the whole context, which MIDI-DDSP found to
  reconstruct better; its controls are what the note expression is measured on.

f0 is passed through from the input (CREPE); the network predicts amplitude, harmonic distribution and noise
magnitudes, which :class:`mididdsp.dsp.DDSPSynth` scales into controls and renders.

Level by construction. A recording's gain says nothing about the instrument (a microphone, a SoundFont's mixing),
so the network never sees it: its loudness input is relative to the recording's own level
(:func:`mididdsp.dsp.loudness_reference`, the 90th percentile of its sounding frames, fixed per recording in
training and per file in inference), and the encoders hear the audio scaled to that level. The network decides
the timbre (harmonic distribution, noise spectrum, their balance); the level is the input's: one gain per frame
makes the dry synthesis read the measured loudness (``level_db``; :func:`mididdsp.dsp.processors.match_loudness`).
So a 6 dB louder input gives exactly 6 dB more amplitude and noise, on audio unlike anything the model has
heard, the resynthesis reads the input's loudness frame by frame, and the controls extracted through it
(volume, fluctuation, peak position) follow the audio. DDSP instead feeds the absolute loudness and, at
inference, shifts it towards the training data's ("adjust"); here the same normalisation is part of training.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mididdsp.dsp import DDSPSynth, hz_to_midi, log_mel_spectrogram, loudness_reference, mfcc
from mididdsp.models import settings_from_dict

ENCODERS = ("none", "mfcc", "logmel")


@dataclass
class AutoencoderConfig:
    """Sizes and switches of :class:`DDSPAutoencoder` (``model:`` section of a training config)."""

    encoder: str = "none"            # none | mfcc | logmel
    hidden_size: int = 256           # GRU units (per direction)
    mlp_layers: int = 0              # layers in each MLP stack (0: none, like the tiny DDSP model)
    mlp_size: int = 256
    bidirectional: bool = False
    frames_per_step: int = 1         # the GRU reads/writes this many 250 Hz frames per step (stacked): k times
                                     # fewer sequential steps, same time resolution; a big speed-up on CPUs
    z_size: int = 16                 # latent size of the mfcc encoder
    n_mels: int = 64                 # log-mel bands of the logmel encoder
    conv_channels: int = 128         # channels of the logmel encoder's CNN
    n_instruments: int = 1
    instrument_embedding: int = 16   # 0 disables it
    n_harmonics: int = 60
    n_noise_bands: int = 65
    reverb: str | None = "learned"   # learned | exponential | null
    reverb_seconds: float = 3.0
    sample_rate: int = 16000

    @classmethod
    def from_dict(cls, values: dict) -> "AutoencoderConfig":
        config = settings_from_dict(cls, values)
        if config.encoder not in ENCODERS:
            raise ValueError(f"model.encoder must be one of {ENCODERS}, got {config.encoder!r}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(in_size: int, size: int, layers: int) -> nn.Module:
    """``layers`` x (Linear -> LayerNorm -> LeakyReLU); identity when ``layers`` is 0."""
    if layers == 0:
        return nn.Identity()
    blocks = []
    for index in range(layers):
        blocks += [nn.Linear(in_size if index == 0 else size, size), nn.LayerNorm(size), nn.LeakyReLU()]
    return nn.Sequential(*blocks)


def scale_f0(f0_hz: torch.Tensor) -> torch.Tensor:
    """Network input for f0: MIDI pitch / 127, [batch, frames] -> [batch, frames, 1]."""
    return (hz_to_midi(f0_hz) / 127.0).unsqueeze(-1)


def scale_relative_loudness(loudness_db: torch.Tensor, reference_db: torch.Tensor) -> torch.Tensor:
    """Network input for loudness: dB relative to the recording's level, / 40 + 1 (the level -> 1, 40 dB under
    it -> 0), [batch, frames] and [batch] -> [batch, frames, 1]."""
    return ((loudness_db - reference_db.unsqueeze(-1)) / 40.0 + 1.0).unsqueeze(-1)


class MfccEncoder(nn.Module):
    """Audio -> per-frame latent z: MFCCs -> instance norm -> GRU -> linear, [batch, frames, z_size]."""

    def __init__(self, z_size: int = 16, hidden_size: int = 256, n_mfcc: int = 30):
        super().__init__()
        self.n_mfcc = n_mfcc
        self.norm = nn.InstanceNorm1d(n_mfcc, affine=True)
        self.gru = nn.GRU(n_mfcc, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, z_size)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        features = self.norm(mfcc(audio, self.n_mfcc).transpose(1, 2)).transpose(1, 2)
        return self.out(self.gru(features)[0])


class LogMelEncoder(nn.Module):
    """Audio -> per-frame features: log-mel -> 1-D CNN over time (mel bands as channels), [batch, frames, channels]."""

    def __init__(self, n_mels: int = 64, channels: int = 128, layers: int = 3, kernel_size: int = 5):
        super().__init__()
        self.n_mels = n_mels
        blocks: list[nn.Module] = []
        for index in range(layers):
            blocks += [nn.Conv1d(n_mels if index == 0 else channels, channels, kernel_size, padding=kernel_size // 2),
                       nn.GroupNorm(1, channels), nn.LeakyReLU()]
        self.cnn = nn.Sequential(*blocks)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # The audio comes scaled to its recording's level (network_outputs), so these values are level-free.
        log_mel = (log_mel_spectrogram(audio, n_mels=self.n_mels) + 8.0) / 5.0  # roughly zero mean, unit scale
        return self.cnn(log_mel.transpose(1, 2)).transpose(1, 2)


class DDSPAutoencoder(nn.Module):
    """Audio features -> network outputs -> :class:`DDSPSynth` -> audio (see the module docstring).

    ``forward(audio, f0_hz, loudness_db, instrument)`` with audio [B, samples] (or None when the encoder is
    ``none`` and only ``n_samples`` is given), f0_hz and loudness_db [B, frames] (frames = samples // 64 + 1),
    instrument [B] ints. Returns the controls (``f0_hz``, ``amplitude``, ``harmonic_distribution``,
    ``noise_magnitudes``) and signals (``harmonic``, ``noise``, ``dry``, ``audio``) by name.
    ``loudness_reference_db`` [B]: the level of the recording each row was cut from (default: of the rows given).
    """

    def __init__(self, config: AutoencoderConfig | dict | None = None):
        super().__init__()
        config = AutoencoderConfig.from_dict(config) if isinstance(config, dict) else (config or AutoencoderConfig())
        self.config = config
        input_size = 2
        if config.encoder == "mfcc":
            self.encoder: nn.Module | None = MfccEncoder(config.z_size, config.hidden_size)
            input_size += config.z_size
        elif config.encoder == "logmel":
            self.encoder = LogMelEncoder(config.n_mels, config.conv_channels)
            input_size += config.conv_channels
        else:
            self.encoder = None
        self.instrument_embedding = (nn.Embedding(config.n_instruments, config.instrument_embedding)
                                     if config.instrument_embedding > 0 else None)
        input_size += config.instrument_embedding if self.instrument_embedding is not None else 0
        if config.frames_per_step < 1:
            raise ValueError(f"model.frames_per_step must be >= 1, got {config.frames_per_step}")
        stack = config.frames_per_step
        input_size *= stack
        self.input_mlp = mlp(input_size, config.mlp_size, config.mlp_layers)
        gru_input = config.mlp_size if config.mlp_layers else input_size
        self.gru = nn.GRU(gru_input, config.hidden_size, batch_first=True, bidirectional=config.bidirectional)
        gru_output = config.hidden_size * (2 if config.bidirectional else 1)
        self.output_mlp = mlp(gru_output + 2 * stack, config.mlp_size, config.mlp_layers)
        head_input = config.mlp_size if config.mlp_layers else gru_output + 2 * stack
        self.n_outputs = 1 + config.n_harmonics + config.n_noise_bands
        self.head = nn.Linear(head_input, self.n_outputs * stack)
        self.synth = DDSPSynth(config.n_harmonics, config.n_noise_bands, config.sample_rate, config.reverb,
                               config.reverb_seconds, config.n_instruments)

    def network_outputs(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, audio: torch.Tensor | None = None,
                        instrument: torch.Tensor | None = None, loudness_reference_db: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """Features -> raw outputs (``amplitude`` [B, T, 1], ``harmonic_distribution``, ``noise_magnitudes``,
        ``f0_hz``, and ``level_db`` [B, T]: the loudness the amplitude and noise are relative to)."""
        batch, frames = f0_hz.shape
        if loudness_reference_db is None:
            loudness_reference_db = loudness_reference(loudness_db)
        pitch, level = scale_f0(f0_hz), scale_relative_loudness(loudness_db, loudness_reference_db)
        inputs = [pitch, level]
        if self.encoder is not None:
            if audio is None:
                raise ValueError(f"the {self.config.encoder} encoder needs the audio")
            # Scaled to the recording's level, so the encoder too never sees the gain (its log floor would).
            level_free = audio * torch.pow(10.0, -loudness_reference_db.to(audio.dtype) / 20.0).unsqueeze(-1)
            inputs.append(_fit_frames(self.encoder(level_free), frames))
        if self.instrument_embedding is not None:
            ids = torch.zeros(batch, dtype=torch.long, device=f0_hz.device) if instrument is None else instrument
            inputs.append(self.instrument_embedding(ids).unsqueeze(1).expand(-1, frames, -1))
        stack = self.config.frames_per_step
        hidden = self.gru(self.input_mlp(_stack_frames(torch.cat(inputs, dim=-1), stack)))[0]
        # f0 and loudness skip past the GRU, as in DDSP's RnnFcDecoder.
        skip = _stack_frames(torch.cat([pitch, level], dim=-1), stack)
        raw = self.head(self.output_mlp(torch.cat([hidden, skip], dim=-1)))
        raw = raw.reshape(batch, -1, self.n_outputs)[:, :frames]
        n_harmonics = self.config.n_harmonics
        return {"amplitude": raw[..., :1], "harmonic_distribution": raw[..., 1:1 + n_harmonics],
                "noise_magnitudes": raw[..., 1 + n_harmonics:], "f0_hz": f0_hz, "level_db": loudness_db}

    def forward(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, audio: torch.Tensor | None = None,
                instrument: torch.Tensor | None = None, n_samples: int | None = None,
                reverb: bool = True, loudness_reference_db: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n_samples = n_samples or (audio.shape[-1] if audio is not None else (f0_hz.shape[1] - 1) * self.synth.hop_size)
        outputs = self.network_outputs(f0_hz, loudness_db, audio, instrument, loudness_reference_db)
        return self.synth(outputs, n_samples, instrument, reverb)

    def controls(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor, audio: torch.Tensor | None = None,
                 instrument: int = 0, chunk_seconds: float = 20.0, reverb: bool = True) -> dict[str, torch.Tensor]:
        """One recording's features f0_hz, loudness_db [T] (and audio [samples] for an encoder) -> its controls
        [1, T, ...], computed in pieces of ``chunk_seconds`` with 2 s of context on each side (the recurrent state
        settles in that), so memory does not grow with the length. The level reference is the whole recording's.
        ``reverb``: whether the level is matched through the reverb (see :meth:`DDSPSynth.get_controls`)."""
        from mididdsp.dsp import HOP_SIZE

        signal = None if audio is None else torch.as_tensor(audio, dtype=torch.float32)
        reference = loudness_reference(loudness_db)[None]
        ids = torch.tensor([instrument])
        frames = f0_hz.shape[0]
        chunk, context = max(1, int(chunk_seconds * 250)), 500
        pieces = []
        with torch.inference_mode():
            for first in range(0, frames, chunk):
                last = min(frames, first + chunk)
                start, stop = max(0, first - context), min(frames, last + context)
                piece_audio = None
                if self.encoder is not None:
                    piece_audio = signal[start * HOP_SIZE:(stop - 1) * HOP_SIZE + 1][None]
                outputs = self.network_outputs(f0_hz[None, start:stop], loudness_db[None, start:stop], piece_audio,
                                               ids, reference)
                controls = self.synth.get_controls(outputs, ids, reverb)
                pieces.append({key: value[:, first - start:last - start] for key, value in controls.items()})
        return {key: torch.cat([piece[key] for piece in pieces], dim=1) for key in pieces[0]}


def _stack_frames(features: torch.Tensor, stack: int) -> torch.Tensor:
    """[batch, frames, C] -> [batch, ceil(frames / stack), stack * C], edge-padding the last group."""
    if stack == 1:
        return features
    batch, frames, channels = features.shape
    missing = -frames % stack
    if missing:
        features = torch.cat([features, features[:, -1:].expand(-1, missing, -1)], dim=1)
    return features.reshape(batch, (frames + missing) // stack, stack * channels)


def _fit_frames(features: torch.Tensor, frames: int) -> torch.Tensor:
    """Cut or edge-pad [batch, T, C] features to ``frames`` frames."""
    if features.shape[1] >= frames:
        return features[:, :frames]
    return torch.cat([features, features[:, -1:].expand(-1, frames - features.shape[1], -1)], dim=1)


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())
