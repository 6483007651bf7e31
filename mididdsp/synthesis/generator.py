"""Notes + note expression -> frame-level synthesis controls: the synthesis generator (level 2 of the hierarchy).

Inputs are plain arrays (so ``synthesis/`` needs nothing from ``expression/``), one monophonic voice per batch row:

    notes        [B, N, 4]  float  start_s, end_s, MIDI pitch, velocity (time order; padding rows anywhere after)
    note_mask    [B, N]     bool   real notes
    expression   [B, N, 7]  float  the six scaled controls of :data:`EXPRESSION_INPUTS` (each 0..1, as in a
                                   ``NoteExpression`` table) and ``vibrato_rate_hz`` (Hz); optionally an eighth
                 or [B, N, 8]      column, ``level_offset_db`` (dB, added to volume and attack noise: a table's
                                   levels are relative to its recording, :mod:`mididdsp.expression.controls`)
    instrument   [B]        long

The output is the controls dict :class:`mididdsp.dsp.DDSPSynth` takes (``f0_hz`` [B, T], ``amplitude`` [B, T],
``harmonic_distribution`` [B, T, K], ``noise_magnitudes`` [B, T, M]) on the project's centred 250 Hz frames.

Faithful by construction. MIDI-DDSP learns the whole mapping and re-extracts its own controls with r 0.57-0.97;
here every control that has a closed form is imposed on the network's output, and the network only fills in
what the controls leave free (the shape of attacks and releases, timbre, noise colour, pitch drift):

    volume, fluctuation    a_dB = volume_dB + fluctuation_dB * z(t), z the note's learned level shape
                           standardised over the note's frames: mean and std are exactly the asked-for ones.
    peak position          ``level_shape: learned``: the shape falls away from the asked-for position on both
                           sides at a learned non-negative rate per frame (a unimodal contour whose maximum is
                           that frame: plateaus, steep or gentle sides, asymmetric swells), minus learned dips
                           confined to the note's edges (attack and release ramps). ``tent`` (the first models):
                           a tent at the position, the edge dips and a small learned ripple (|.| <= 0.03).
    brightness             each frame's harmonic distribution is the network's, tilted by exp(beta k) with beta
                           solved (Newton) so that the centroid equals the note's brightness plus a learned
                           zero-mean contour: the note's mean centroid is exact.
    attack noise           the noise level (mean dB over bands) is learned (in dB under the harmonic level with
                           ``noise_reference: level``), and a per-note offset over the first 10 frames (decaying
                           after them) sets the mean of those frames exactly.
    vibrato                extent (cents, sinusoid amplitude as the extractor measures it) and rate (Hz) are
                           added to f0 as a sinusoid with a 0.15 s fade-in and a random (seeded) phase.
f0 is the written pitch, a raised-cosine glide of 32 ms centred on each legato onset (its midpoint is the written
onset), a
learned slow drift (|.| <= 50 cents, averaged twice over 0.3 s: never vibrato-fast; zero mean over each note: never
a retuning), a learned onset scoop that decays
within 40 ms (the part of a note the vibrato measurement leaves out), and vibrato.
Rests: level and noise fall from the last note's end at a learned per-instrument rate (release tails), pitch and
vibrato keep going under the release.

No frame-level autoregression: one convolutional pass over the voice (receptive field 0.25 s either side with the
default 6 layers; the drift's averages add 0.3 s), so a 60 s voice takes tens of milliseconds, not MIDI-DDSP's
Python loop of 15 000 sampling steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy
import torch
import torch.nn.functional as F
from torch import nn

from mididdsp.dsp import DB_FLOOR, DDSPSynth, FRAME_RATE, midi_to_hz
from mididdsp.synthesis.tilt import tilt_to_centroid, without_tilt
from mididdsp.synthesis.settings import (  # noqa: F401 - re-exported, as before the split
    ATTACK_FRAMES, DEVIATION_SMOOTHING, EDGE_FRAMES, EXPRESSION_INPUTS, GLIDE_FRAMES, HEADS, LEGATO_GAP_S,
    LOGIT_RANGE, N_FEATURES, NOISE_RELATIVE_DB, PHYSICAL_UNITS, RATE_RANGE, RIPPLE, SCALED_INPUTS, SILENCE_DB,
    VIBRATO_FADE_S, GeneratorConfig, kernel_settings, limit_hz as _limit_hz, receptive_field)
from mididdsp.synthesis.spans import generator_pieces


# ------------------------------------------------------------------------------------------------ note layout
@dataclass
class FrameLayout:
    """Where each frame lies relative to the voice's notes (all [B, T] unless stated).

    ``note`` the index of the last note starting at or before the frame (-1 before the first; clamped to 0 in
    ``gather``); ``active`` the frame is inside that note; ``since_onset`` frames since its first frame;
    ``length`` its frame count; ``since_end`` frames since it ended (rests); ``first``/``stop`` [B, N] each
    note's first frame and the frame where it stops sounding (its end, or the next onset)."""

    note: torch.Tensor
    active: torch.Tensor
    since_onset: torch.Tensor
    length: torch.Tensor
    since_end: torch.Tensor
    first: torch.Tensor
    stop: torch.Tensor
    n_notes: int

    def gather(self, per_note: torch.Tensor) -> torch.Tensor:
        """[B, N] or [B, N, C] per-note values -> [B, T] / [B, T, C] values of each frame's note."""
        index = self.note.clamp_min(0)
        if per_note.dim() == 3:
            return per_note.gather(1, index.unsqueeze(-1).expand(-1, -1, per_note.shape[-1]))
        return per_note.gather(1, index)

    def note_mean(self, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted mean of [B, T] ``values`` per note (``weights`` [B, T], 0 outside), back on frames [B, T]."""
        batch = values.shape[0]
        index = self.note.clamp_min(0)
        total = values.new_zeros(batch, self.n_notes).scatter_add(1, index, values * weights)
        count = values.new_zeros(batch, self.n_notes).scatter_add(1, index, weights)
        return self.gather(total / count.clamp_min(1e-6))


def frame_layout(notes: torch.Tensor, note_mask: torch.Tensor, n_frames: int, start_frame: int = 0) -> FrameLayout:
    """The frames ``start_frame .. start_frame + n_frames - 1`` against the notes (see :class:`FrameLayout`).

    A note covers frames ``round(start * 250)`` up to ``round(end * 250) - 1`` (at least one), and stops at the
    next note's first frame, as in :func:`mididdsp.score.note_frames`."""
    batch, n_notes = note_mask.shape
    device = notes.device
    far = 1 << 40  # padding notes start "never", so they sort after every real one
    first = torch.floor(notes[..., 0] * FRAME_RATE + 0.5).long()
    end = torch.maximum(torch.floor(notes[..., 1] * FRAME_RATE + 0.5).long(), first + 1)
    first = torch.where(note_mask, first, torch.full_like(first, far))
    end = torch.where(note_mask, end, torch.full_like(end, far + 1))
    next_first = torch.cat([first[:, 1:], torch.full_like(first[:, :1], far)], dim=1)
    stop = torch.minimum(end, next_first)
    if _compiled(notes):  # inference on the CPU: one compiled walk over each item's frames and notes
        from mididdsp.synthesis import kernels

        columns = [kernels.frame_positions(first[item], stop[item], end[item], n_frames, start_frame)
                   for item in range(batch)]
        stacked = {name: torch.from_numpy(numpy.stack([column[name] for column in columns]))
                   for name in kernels.FRAME_POSITIONS}
        return FrameLayout(**stacked, first=first, stop=stop, n_notes=max(n_notes, 1))
    frames = torch.arange(start_frame, start_frame + n_frames, device=device).expand(batch, n_frames).contiguous()
    note = torch.searchsorted(first.contiguous(), frames, right=True) - 1
    index = note.clamp_min(0)
    note_first, note_stop = first.gather(1, index), stop.gather(1, index)
    started = note >= 0
    active = started & (frames < note_stop)
    return FrameLayout(note=note, active=active,
                       since_onset=torch.where(started, frames - note_first, torch.zeros_like(frames)),
                       length=(end - first).gather(1, index).clamp_min(1),
                       since_end=torch.where(started & ~active, frames - note_stop, torch.zeros_like(frames)),
                       first=first, stop=stop, n_notes=max(n_notes, 1))


def note_neighbours(notes: torch.Tensor, note_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each note's neighbours, [B, N] each: ``previous_pitch`` (its own for the first note), ``gap`` seconds from
    the previous note's end to this start (1 s for the first), ``next_pitch`` (its own for the last) and
    ``next_gap`` seconds from this end to the next start (10 s where no real note follows)."""
    pitch = notes[..., 2]
    has_next = torch.cat([note_mask[:, 1:], torch.zeros_like(note_mask[:, :1])], dim=1)
    next_start = torch.cat([notes[:, 1:, 0], notes[:, -1:, 1] + 10.0], dim=1)
    return {"previous_pitch": torch.cat([pitch[:, :1], pitch[:, :-1]], dim=1),
            "gap": notes[..., 0] - torch.cat([notes[:, :1, 0] - 1.0, notes[:, :-1, 1]], dim=1),
            "next_pitch": torch.cat([pitch[:, 1:], pitch[:, -1:]], dim=1),
            "next_gap": torch.where(has_next, next_start - notes[..., 1], torch.full_like(pitch, 10.0))}


# ------------------------------------------------------------------------------------------------ the model
class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each frame of [B, C, T], in place of transposing to [B, T, C] and back
    (the same maths and parameters as ``nn.LayerNorm(C)``; a third of the stack's time saved on CPU)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(variance + self.eps) * self.weight[:, None] + self.bias[:, None]


class SynthesisGenerator(nn.Module):
    """Notes + expression -> synthesis controls (see the module docstring); ``self.synth`` renders them."""

    def __init__(self, config: GeneratorConfig | dict | None = None):
        super().__init__()
        config = GeneratorConfig.from_dict(config) if isinstance(config, dict) else config
        if config is None:
            raise ValueError("SynthesisGenerator needs a config with the controls' ranges")
        self.config = config
        self.embedding = nn.Embedding(config.n_instruments, config.instrument_embedding)
        width = config.channels
        self.input = nn.Conv1d(N_FEATURES + config.instrument_embedding, width, 1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(width, width, config.kernel_size, dilation=2 ** i, padding=2 ** i * (config.kernel_size // 2))
            for i in range(config.layers))
        # normalised per frame (over channels): a norm over time would make each frame depend on the whole
        # sequence, so a 6 s training window and a whole voice would see different statistics
        self.norms = nn.ModuleList(ChannelNorm(width) for _ in range(config.layers))
        # heads: level dip, level ripple (tent) or fall rate (learned), centroid contour, noise level, slow f0
        # deviation, onset scoop, then the harmonics and the noise bands
        self.n_outputs = HEADS + config.n_harmonics + config.n_noise_bands
        self.output = nn.Conv1d(width, self.n_outputs, 1)
        nn.init.zeros_(self.output.weight)
        with torch.no_grad():
            self.output.bias.zero_()
            self.output.bias[0] = -3.0   # small dips at first
            self.output.bias[HEADS:HEADS + config.n_harmonics] = -0.1 * torch.arange(config.n_harmonics)  # falling
        # release rate per instrument, dB/s = 100 * softplus(.) (init 200 dB/s: -60 dB in 0.3 s)
        self.release = nn.Parameter(torch.full((config.n_instruments,), math.log(math.e ** 2 - 1)))
        self.synth = DDSPSynth(config.n_harmonics, config.n_noise_bands, config.sample_rate, config.reverb,
                               config.reverb_seconds, config.n_instruments)
        ranges = torch.tensor([[float(v) for v in config.ranges[name]] for name in SCALED_INPUTS])
        self.register_buffer("ranges", ranges, persistent=False)

    # -------------------------------------------------------------------------------------------- helpers
    def physical(self, expression: torch.Tensor) -> torch.Tensor:
        """[..., 7 or 8] scaled controls, rate (and level offset) -> [..., 7] physical values (dB, dB, fraction,
        cents, harmonic, dB, Hz), the level offset added to volume and attack noise (both are relative to it)."""
        low, high = self.ranges[:, 0].to(expression), self.ranges[:, 1].to(expression)
        scaled = expression[..., :6].clamp(0.0, 1.0)
        physical = low + scaled * (high - low)
        if expression.shape[-1] > 7:
            offset = expression[..., 7]
            physical = torch.stack([physical[..., 0] + offset, *physical[..., 1:5].unbind(-1),
                                    physical[..., 5] + offset], dim=-1)
        return torch.cat([physical, expression[..., 6:7]], dim=-1)

    def features(self, notes: torch.Tensor, neighbours: dict[str, torch.Tensor], expression: torch.Tensor,
                 layout: FrameLayout) -> torch.Tensor:
        """Per-frame conditioning [B, T, N_FEATURES] (each roughly in -1..1); ``neighbours``: note_neighbours()."""
        pitch, gap = notes[..., 2], neighbours["gap"]
        per_note = torch.stack([
            pitch / 127.0, (pitch - neighbours["previous_pitch"]) / 12.0, (gap.clamp(-1, 1) < LEGATO_GAP_S).float(),
            gap.clamp(0, 2) / 2, neighbours["next_gap"].clamp(0, 2) / 2,
            torch.log((notes[..., 1] - notes[..., 0]).clamp_min(1e-3)) / 4.0], dim=-1)
        # vibrato (extent, rate) is left out: it is imposed on f0 note by note, and an input here would let an
        # edit of one note's vibrato move its neighbours' pitch through the convolutions' context (measured: 3 cents)
        scaled = expression[..., [0, 1, 2, 4, 5]].clamp(0, 1)
        if _compiled(notes):  # inference on the CPU: the frame columns in one compiled pass per item
            from mididdsp.synthesis import kernels

            rows = [kernels.frame_features(per_note[item], scaled[item], {
                name: getattr(layout, name)[item] for name in kernels.FRAME_POSITIONS}) for item in range(len(notes))]
            return torch.from_numpy(rows[0][None] if len(rows) == 1 else numpy.stack(rows))
        frame = layout.gather(per_note)
        seconds = layout.since_onset.float() / FRAME_RATE
        length = layout.length.float()
        position = layout.since_onset.float() / length
        since_end = layout.since_end.float() / FRAME_RATE
        started = (layout.note >= 0).float()
        active = layout.active.float()
        timing = torch.stack([
            active, started, position.clamp(0, 2) * active, (seconds.clamp(0, 2) / 2) * active,
            ((length - layout.since_onset.float()) / FRAME_RATE).clamp(0, 2) / 2 * active,
            since_end.clamp(0, 2) / 2, torch.exp(-seconds / 0.05) * active], dim=-1)
        return torch.cat([timing, frame, layout.gather(scaled) * started.unsqueeze(-1)], dim=-1)

    def network(self, features: torch.Tensor, instrument: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> raw outputs [B, T, n_outputs] (non-causal dilated convolutions, residual)."""
        if not torch.is_grad_enabled():
            if features.shape[0] == 1:  # a render's voice: no stacking copy of the [T, n_outputs] result
                return self._network_inference(features[0], instrument[0])[None]
            return torch.stack([self._network_inference(item, index) for item, index in zip(features, instrument)])
        embedding = self.embedding(instrument).unsqueeze(1).expand(-1, features.shape[1], -1)
        inputs = torch.cat([features, embedding], dim=-1)
        hidden = self.input(inputs.transpose(1, 2))
        for conv, norm in zip(self.blocks, self.norms):
            hidden = hidden + conv(F.leaky_relu(norm(hidden), 0.1))
        return self.output(F.leaky_relu(hidden, 0.1)).transpose(1, 2)

    def _network_inference(self, features: torch.Tensor, instrument: torch.Tensor) -> torch.Tensor:
        """:meth:`network` of one item without autograd, time-major: [T, F] features and the instrument's index ->
        [T, n_outputs] raw outputs. The instrument's embedding, the same in every frame, enters the input layer as
        part of its bias (no [T, F + E] concatenation); each dilated convolution is three matrix products
        accumulated in place into the residual, one per tap, on shifted rows (no padding, no copies), and the norm
        over each frame's channels and the activation are one compiled pass where numba is (torch's layer_norm
        and leaky_relu took a fifth of the generator's inference): equal to the training path's convolutions to
        float rounding (1e-6)."""
        frames = features.shape[0]
        weight = self.input.weight[:, :, 0]
        n_features = features.shape[1]
        bias = torch.addmv(self.input.bias, weight[:, n_features:], self.embedding.weight[instrument])
        hidden = torch.addmm(bias, features, weight[:, :n_features].t())
        compiled = _compiled(hidden)
        if compiled:  # norm and activation in one pass (mididdsp.synthesis.kernels), into one buffer
            from mididdsp.synthesis import kernels

            normed = torch.empty_like(hidden)
        for conv, norm in zip(self.blocks, self.norms):
            if compiled:  # the convolution's bias goes into the residual in the same pass
                kernels.layer_norm_leaky(hidden.numpy(), norm.weight.detach(), norm.bias.detach(), norm.eps, 0.1,
                                         normed.numpy(), conv.bias.detach())
            else:
                normed = F.leaky_relu_(F.layer_norm(hidden, hidden.shape[1:], norm.weight, norm.bias, norm.eps), 0.1)
                hidden.add_(conv.bias)
            weight, dilation, centre = conv.weight, conv.dilation[0], conv.kernel_size[0] // 2
            for tap in range(conv.kernel_size[0]):
                shift = (tap - centre) * dilation  # output frame t reads input frame t + shift (zero outside)
                if abs(shift) >= frames:
                    continue
                if shift >= 0:
                    hidden[:frames - shift].addmm_(normed[shift:], weight[:, :, tap].t())
                else:
                    hidden[-shift:].addmm_(normed[:frames + shift], weight[:, :, tap].t())
        return torch.addmm(self.output.bias, F.leaky_relu_(hidden, 0.1), self.output.weight[:, :, 0].t())

    # -------------------------------------------------------------------------------------------- forward
    def forward(self, notes: torch.Tensor, note_mask: torch.Tensor, expression: torch.Tensor,
                instrument: torch.Tensor, n_frames: int, start_frame: int = 0,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Notes + expression -> controls (shapes in the module docstring) plus, for losses and plots,
        ``amplitude_db``, ``noise_db`` (frame level) [B, T], ``active`` [B, T] and ``note`` [B, T].

        ``generator`` draws the vibrato phases (None: phase 0). Whole notes must lie in the frames for the
        per-note statistics to be exact (render whole voices, or chunks that do not cut notes)."""
        config = self.config
        notes = notes.to(torch.float32)
        layout = frame_layout(notes, note_mask, n_frames, start_frame)
        neighbours = note_neighbours(notes, note_mask)
        raw = self.network(self.features(notes, neighbours, expression, layout), instrument)
        if _compiled(raw):  # inference on the CPU: what follows in compiled passes (mididdsp.synthesis.kernels)
            return self._compiled_controls(raw, notes, neighbours, expression, layout, instrument, generator)
        physical = layout.gather(self.physical(expression))     # [B, T, 7]
        active = layout.active.float()
        started = layout.note >= 0
        release_db_per_frame = 100.0 * F.softplus(self.release)[instrument].unsqueeze(1) / FRAME_RATE

        # level: a contour peaking at the asked position (learned, or a tent), learned dips at the edges,
        # standardised per note
        peak = physical[..., 2]
        if config.level_shape == "learned":
            # rates within e^-RATE_RANGE .. e^RATE_RANGE of each other: a near-plateau or a steep side, but never a
            # flat note with one cliff, which standardised to the asked fluctuation would plunge 100 dB and more
            body = _unimodal(torch.exp(RATE_RANGE * torch.tanh(raw[..., 1] / RATE_RANGE)), peak, layout)
        else:
            position = layout.since_onset.float() / layout.length.float()
            body = -(position - peak).abs() / torch.maximum(peak, 1 - peak).clamp_min(1e-3)
            body = body + RIPPLE * torch.tanh(raw[..., 1])
        # dips only near the note's edges (attack and release ramps, 32 ms time constant), where the extractor's
        # peak search does not look, so they cannot move the peak
        to_end = (layout.length - 1 - layout.since_onset).clamp_min(0).float()
        edges = torch.exp(-layout.since_onset.float() / EDGE_FRAMES) + torch.exp(-to_end / EDGE_FRAMES)
        shape = body - 4.0 * torch.sigmoid(raw[..., 0]) * edges
        mean = layout.note_mean(shape, active)
        std = torch.sqrt(layout.note_mean((shape - mean) ** 2, active) + 1e-8)
        level_db = physical[..., 0] + physical[..., 1] * (shape - mean) / std
        level_db = self._release(level_db, layout, release_db_per_frame)

        # noise: learned level, attack offset so that its first 10 frames average the asked-for dB
        if config.noise_reference == "level":
            # dB under the frame's harmonic level (0 .. -80): bow and breath noise follow the playing level, and
            # recordings hold it 40-60 dB under (an absolute -70 dB floor left renders 10-25 dB too hissy)
            sustain = level_db - NOISE_RELATIVE_DB * torch.sigmoid(raw[..., 3])
        else:  # "absolute", the first models: -70 .. -20 dB
            sustain = -45.0 + 25.0 * torch.tanh(raw[..., 3] / 2.0)
        attack = (active > 0) & (layout.since_onset < ATTACK_FRAMES)
        decay = torch.exp(-(layout.since_onset - ATTACK_FRAMES).clamp_min(0).float() / ATTACK_FRAMES)
        if config.noise_reference == "level":
            # flat at the asked dB over the attack window, then easing into the learned level: a sustained level
            # that follows the attack's ramp would sink some of those frames under the extractor's floor
            noise_level = physical[..., 5] * decay + sustain * (1.0 - decay)
        else:
            noise_level = sustain + (physical[..., 5] - layout.note_mean(sustain, attack.float())) * decay
        noise_level = self._release(noise_level, layout, release_db_per_frame)
        # in the attack window the bands' spread shrinks near the extractor's -80 dB floor, so that no band is
        # floored there and the attack noise (their mean in dB over those frames) stays exact
        spread = ((noise_level - DB_FLOOR) / config.noise_shape_db).clamp(0.0, 1.0)
        if config.noise_reference == "level":
            # elsewhere in the note the full spread (quiet noise keeps its colour); in rests it fades with the
            # release, so that a release that reaches SILENCE_DB is silent in every band (the sparse render's gate)
            fading = ((noise_level - SILENCE_DB) / config.noise_shape_db).clamp(0.0, 1.0)
            spread = torch.where(attack, spread, torch.where(layout.active, torch.ones_like(spread), fading))
        silent = ~started
        band_shape = config.noise_shape_db * spread.unsqueeze(-1) * torch.tanh(
            raw[..., HEADS + config.n_harmonics:] / 3.0)
        noise_db = noise_level.unsqueeze(-1) + band_shape - band_shape.mean(-1, keepdim=True)
        noise_db = torch.where(silent.unsqueeze(-1), torch.full_like(noise_db, SILENCE_DB), noise_db)
        noise_magnitudes = torch.pow(10.0, noise_db / 20.0)

        # f0: written pitch + legato glide + slow learned deviation + vibrato
        pitch = layout.gather(notes[..., 2])
        previous, gap = layout.gather(neighbours["previous_pitch"]), layout.gather(neighbours["gap"])
        # the legato glide is centred on the onset (half of it in the previous note's last frames): it passes the
        # midpoint between the two pitches exactly where the file puts the new note
        half = GLIDE_FRAMES // 2
        frame_numbers = layout.since_onset + layout.first.gather(1, layout.note.clamp_min(0))
        gliding_in = (layout.note > 0) & (gap < LEGATO_GAP_S) & (layout.since_onset < half) & layout.active
        phase_in = math.pi * (layout.since_onset.float() + half) / GLIDE_FRAMES
        glide = torch.where(gliding_in, (previous - pitch) * 0.5 * (1 + torch.cos(phase_in)), torch.zeros_like(pitch))
        next_pitch, next_gap = layout.gather(neighbours["next_pitch"]), layout.gather(neighbours["next_gap"])
        next_first = layout.gather(torch.cat([layout.first[:, 1:], layout.first[:, -1:]], dim=1))
        to_next = next_first - frame_numbers
        gliding_out = layout.active & (next_gap < LEGATO_GAP_S) & (to_next <= half) & (to_next > 0)
        phase_out = math.pi * (half - to_next).float() / GLIDE_FRAMES
        glide = glide + torch.where(gliding_out, (next_pitch - pitch) * 0.5 * (1 - torch.cos(phase_out)),
                                    torch.zeros_like(pitch))
        pitch = pitch + glide
        # a slow deviation (drift; averaged twice over 0.3 s: at most 4 % of it passes at 3 Hz and above, where
        # vibrato is measured; one average let 19 % through at 4.5 Hz) and a scoop that
        # decays within the first 40 ms, which the vibrato measurement leaves out
        deviation = config.max_deviation_cents * torch.tanh(raw[..., 4])
        deviation = _moving_average(_moving_average(deviation, DEVIATION_SMOOTHING), DEVIATION_SMOOTHING)
        # centred on each note: a drift moves within a note, never its tuning (uncentred, it learned a bias that
        # left whole renders of unfamiliar music 8-9 cents flat)
        deviation = deviation - layout.note_mean(deviation, active)
        onset_value = layout.gather(_at_onsets(raw[..., 5], layout))
        scoop = config.max_deviation_cents * torch.tanh(onset_value) * torch.exp(-layout.since_onset.float() / 3.0)
        deviation = deviation + scoop * layout.active.float()
        pitch = pitch + (deviation + self._vibrato(physical, layout, notes.shape[1], generator)) / 100.0
        f0_hz = midi_to_hz(pitch)

        # harmonic distribution: the network's, tilted to the asked-for centroid
        contour = torch.tanh(raw[..., 2])
        contour = contour - layout.note_mean(contour, active)
        harmonics = torch.arange(1, config.n_harmonics + 1, device=pitch.device)
        nyquist_ok = f0_hz.unsqueeze(-1) * harmonics < _limit_hz(config)
        highest = nyquist_ok.float().sum(-1).clamp_min(1.0)
        centroid = torch.minimum((physical[..., 4] + contour).clamp_min(1.0), highest)
        logits = without_tilt(LOGIT_RANGE * torch.tanh(raw[..., HEADS:HEADS + config.n_harmonics] / LOGIT_RANGE))
        distribution = tilt_to_centroid(logits.masked_fill(~nyquist_ok, -1e4), centroid)

        level_db = torch.where(silent, torch.full_like(level_db, SILENCE_DB), level_db)
        return {"f0_hz": f0_hz, "amplitude": torch.pow(10.0, level_db / 20.0), "harmonic_distribution": distribution,
                "noise_magnitudes": noise_magnitudes, "amplitude_db": level_db,
                "noise_db": noise_level, "active": layout.active, "note": layout.note}

    def _compiled_controls(self, raw: torch.Tensor, notes: torch.Tensor, neighbours: dict[str, torch.Tensor],
                           expression: torch.Tensor, layout: FrameLayout, instrument: torch.Tensor,
                           generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """What :meth:`forward` computes after the network, without gradient on the CPU: the per-frame controls
        of each item in one compiled pass (:func:`mididdsp.synthesis.kernels.frame_controls`), the noise bands and
        the tilted harmonic distribution by their kernels. The same outputs as the tensor code to float rounding
        (tests/test_synthesis_generator.py), the same vibrato phases drawn from ``generator``."""
        from mididdsp.synthesis import kernels

        config = self.config
        physical = self.physical(expression)
        phases = _vibrato_phases(physical, notes.shape[1], generator)
        release_db_per_frame = 100.0 * F.softplus(self.release)[instrument] / FRAME_RATE
        rows = []
        for item in range(raw.shape[0]):
            per_note = {"physical": physical[item], "pitch": notes[item, :, 2], "phases": phases[item],
                        **{name: values[item] for name, values in neighbours.items()}}
            frame = {name: getattr(layout, name)[item] for name in (*kernels.FRAME_POSITIONS, "first", "stop")}
            rows.append(kernels.frame_controls(raw[item], frame, per_note,
                                               kernel_settings(config, float(release_db_per_frame[item]))))
        controls = {name: torch.from_numpy(numpy.stack([row[name] for row in rows])) for name in kernels.FRAME_CONTROLS}
        silent = layout.note < 0
        noise_magnitudes = torch.from_numpy(kernels.noise_magnitudes(
            raw[..., HEADS + config.n_harmonics:], controls["noise_db"], controls["spread"], silent,
            config.noise_shape_db, SILENCE_DB))
        distribution = torch.from_numpy(kernels.harmonic_distribution(
            raw[..., HEADS:HEADS + config.n_harmonics], controls["highest"], controls["centroid"], LOGIT_RANGE))
        level_db = controls["amplitude_db"]
        return {"f0_hz": controls["f0_hz"], "amplitude": torch.pow(10.0, level_db / 20.0),
                "harmonic_distribution": distribution, "noise_magnitudes": noise_magnitudes, "amplitude_db": level_db,
                "noise_db": controls["noise_db"], "active": layout.active, "note": layout.note}

    def _release(self, level_db: torch.Tensor, layout: FrameLayout, per_frame: torch.Tensor) -> torch.Tensor:
        """Rest frames: the level of the note's last frame, falling ``per_frame`` dB per frame, floored."""
        batch = level_db.shape[0]
        index = layout.note.clamp_min(0)
        last = (layout.active & (layout.since_onset + 1 + layout.first.gather(1, index)
                                 == layout.stop.gather(1, index)))
        end_level = level_db.new_full((batch, layout.n_notes), SILENCE_DB).scatter_reduce(
            1, index, torch.where(last, level_db, torch.full_like(level_db, SILENCE_DB)), "amax")
        falling = layout.gather(end_level) - per_frame * (layout.since_end.float() + 1)
        return torch.where(layout.active, level_db, falling.clamp_min(SILENCE_DB))

    @staticmethod
    def _vibrato(physical: torch.Tensor, layout: FrameLayout, n_notes: int,
                 generator: torch.Generator | None) -> torch.Tensor:
        """Cents [B, T]: extent * fade-in * sin(2 pi rate t + phase), t from the note's onset."""
        phases = _vibrato_phases(physical, n_notes, generator)
        seconds = layout.since_onset.float() / FRAME_RATE
        fade = 0.5 - 0.5 * torch.cos(math.pi * (seconds / VIBRATO_FADE_S).clamp(0, 1))
        rate = physical[..., 6].clamp(0.0, 15.0)
        wave = torch.sin(2 * math.pi * rate * seconds + layout.gather(phases))
        return physical[..., 3] * fade * wave * (layout.note >= 0).float()


def _vibrato_phases(like: torch.Tensor, n_notes: int, generator: torch.Generator | None) -> torch.Tensor:
    """[B, max(N, 1)] each note's vibrato phase (rad): uniform draws from ``generator``, or 0 without one."""
    batch = like.shape[0]
    if generator is None:
        return like.new_zeros(batch, max(n_notes, 1))
    phases = torch.rand(batch, max(n_notes, 1), generator=generator, device=generator.device) * 2 * math.pi
    return phases.to(like)


def _compiled(tensor: torch.Tensor) -> bool:
    """Whether the compiled inference stages (:mod:`mididdsp.synthesis.kernels`) replace the tensor code for
    ``tensor``'s computation: no gradient, float32 on the CPU, numba installed."""
    if torch.is_grad_enabled() or tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        return False
    from mididdsp.synthesis import kernels

    return kernels.available()


def _unimodal(rate: torch.Tensor, peak: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """A contour in -1..0 per note that falls away from the note's peak at ``rate`` [B, T] (>= 0, per frame):
    minus the rates summed between the frame and the peak, divided by the largest such sum in the note.

    ``peak`` [B, T]: each frame's note's asked peak position (0..1 of the note). The peak lies ``peak * length``
    frames after the onset (fractional, where the tent has it); the contour is 0 there and falls monotonically on
    both sides, so its maximum is the asked position whatever the rates: a constant rate gives the tent, small
    rates a near-plateau, large ones a steep side. Frames outside notes read 0. Only the note's own frames' rates
    enter (a note cut by the window's edge has its peak clamped into the window; training leaves such notes out).
    """
    n_frames = rate.shape[1]
    # float64: the sums run over the whole window, and a note's contour is a difference of two of them
    cumulative = torch.cumsum(rate.double(), dim=1)
    frame = torch.arange(n_frames, device=rate.device, dtype=torch.float64).expand_as(cumulative)
    at = (frame + peak.double() * layout.length.double() - layout.since_onset.double()).clamp(0, n_frames - 1)
    low = at.floor().long()
    high = (low + 1).clamp_max(n_frames - 1)
    fraction = at - low.double()
    at_peak = cumulative.gather(1, low) * (1 - fraction) + cumulative.gather(1, high) * fraction
    distance = torch.where(layout.active, (cumulative - at_peak).abs(), torch.zeros_like(cumulative)).float()
    index = layout.note.clamp_min(0)
    depth = distance.new_zeros(rate.shape[0], layout.n_notes).scatter_reduce(1, index, distance, "amax")
    return -distance / layout.gather(depth).clamp_min(1e-6)


def _at_onsets(values: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
    """[B, T] frame values -> [B, N] the value at each note's first frame (0 for notes outside the frames)."""
    batch = values.shape[0]
    first = layout.active & (layout.since_onset == 0)
    index = layout.note.clamp_min(0)
    return values.new_zeros(batch, layout.n_notes).scatter_add(1, index, values * first.float())


def _moving_average(signal: torch.Tensor, width: int) -> torch.Tensor:
    """Centred moving average over ``width`` frames of [B, T], edges held."""
    padded = F.pad(signal.unsqueeze(1), (width // 2, width - 1 - width // 2), mode="replicate")
    return F.avg_pool1d(padded, width, stride=1).squeeze(1)


def release_frames(model: SynthesisGenerator, instrument: int, from_db: float) -> int:
    """Frames after a note stops until its release, starting at ``from_db`` (the level of its last frame, dB),
    has fallen to :data:`SILENCE_DB`: the learned release rate of ``instrument``, as :meth:`SynthesisGenerator._release`
    applies it (the k-th rest frame is ``from_db - k * rate``). The noise level falls at the same rate."""
    per_frame = 100.0 * float(F.softplus(model.release.detach()[int(instrument)])) / FRAME_RATE
    return max(0, math.ceil((from_db - SILENCE_DB) / per_frame))


@torch.no_grad()
def generate_voice(model: SynthesisGenerator, notes: torch.Tensor, expression: torch.Tensor, instrument: int,
                   n_frames: int, seed: int | None = 0, chunk_frames: int = 15000) -> dict[str, torch.Tensor]:
    """One voice's controls ([1, T, ...]) in pieces of about ``chunk_frames`` frames, equal to one pass.

    ``notes`` [N, 4] (start_s, end_s, pitch, velocity) in time order, ``expression`` [N, 7 or 8]. Pieces are cut at note
    onsets, so every note lies whole in one piece, and each piece is computed with the stack's receptive field of
    context either side; the vibrato phases come from a generator seeded with ``seed`` (None: phase 0), drawn the
    same way for every piece. Working memory is bounded by the piece length (and the longest note).
    """
    return generate_spans(model, notes, expression, instrument, n_frames, [(0, n_frames)], seed, chunk_frames)[0]


@torch.no_grad()
def generate_spans(model: SynthesisGenerator, notes: torch.Tensor, expression: torch.Tensor, instrument: int,
                   n_frames: int, spans: list[tuple[int, int]], seed: int | None = 0, chunk_frames: int = 15000,
                   counter: dict | None = None) -> list[dict[str, torch.Tensor]]:
    """The controls of a voice of ``n_frames`` frames over the frame ranges ``spans`` only: one dict per span
    ``(first, stop)`` with ``f0_hz`` [1, stop - first] Hz, ``amplitude`` [1, stop - first] linear,
    ``harmonic_distribution`` [1, stop - first, K] and ``noise_magnitudes`` [1, stop - first, M] linear, equal (to
    float rounding) to the same frames of one pass over all ``n_frames`` frames.

    Each piece is computed over its frames plus :func:`receptive_field` frames of context either side (cut at 0
    and ``n_frames``, as one pass is), with every note of the voice given to the model (so the vibrato phases,
    drawn from ``seed`` over the whole note list, do not depend on the spans). A span must not cut a note whose
    frames it keeps (per-note statistics need the whole note in the window): cut spans where the voice is silent.
    Spans longer than ``chunk_frames`` are computed in pieces cut at note onsets (bounded working memory).
    ``counter``: if given, ``counter["generator_frames"]`` is increased by the frames computed (context included).
    """
    notes = torch.as_tensor(notes, dtype=torch.float32).reshape(-1, 4)[None]
    expression = torch.as_tensor(expression, dtype=torch.float32)
    expression = expression.reshape(notes.shape[1], expression.shape[-1] if expression.numel() else 7)[None]
    mask = torch.ones(notes.shape[:2], dtype=torch.bool)
    ids = torch.tensor([int(instrument)])
    context = receptive_field(model.config) + 1
    onsets = torch.floor(notes[0, :, 0] * FRAME_RATE + 0.5).long().tolist()
    keys = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")
    results = []
    for span in generator_pieces(onsets, spans, chunk_frames, context, n_frames):
        pieces = []
        for first, last, start, stop in span:
            generator = None if seed is None else torch.Generator().manual_seed(int(seed))
            out = model(notes, mask, expression, ids, stop - start, start, generator)
            pieces.append({key: out[key][:, first - start:last - start] for key in keys})
            if counter is not None:
                counter["generator_frames"] = counter.get("generator_frames", 0) + stop - start
        results.append(pieces[0] if len(pieces) == 1 else
                       {key: torch.cat([piece[key] for piece in pieces], dim=1) for key in keys})
    return results
