"""Notes -> note expression: an autoregressive, stochastic, velocity-aware prior over the six controls.

Level 1 of the MIDI stack. Given the notes of one monophonic voice, it gives a distribution over each note's six
scaled expression controls (:data:`mididdsp.expression.controls.CONTROL_NAMES`, each in [0, 1]) and its vibrato
rate (Hz), which one can sample (``temperature``, ``seed``), steer, and condition on a person's edits.

Architecture (one step per note; ``B`` voices, ``N`` notes, valid notes first in each row):

1. Per-note features, derived from ``notes`` [B, N, 4] = (start_s, end_s, pitch, velocity) and the mask
   (:func:`note_features`): pitch, log duration, the signed gap to the previous and next note (negative: overlap),
   velocity / 127 and its log, the place in the phrase (notes since / until the nearest rest longer than
   ``rest_seconds``, and their ratio), the intervals from the previous and to the next note, and whether a rest
   comes before / after. Rests are context, not tokens: the gaps carry them.
2. An input MLP with the instrument embedding -> a bidirectional GRU over the notes: every note sees what is
   coming (a long final note, a phrase end) as well as what came before.
3. A unidirectional GRU over the notes, fed the context and the previous note's six scaled controls: the
   autoregression over notes. In training the predecessor is hidden from it at random (``ar_dropout``), so
   the level comes from the velocity rather than from copying the last note, and sampled predecessors (which
   drift) cannot pull a voice away from its velocities.
4. For each note, the 7 outputs one after another: output ``j`` has its own head (one hidden layer), fed the
   context, the autoregressive state, the note's own features and the note's outputs ``< j`` (raw and as
   Gaussian bumps, so the correlations within a note are modelled and easy to learn), and
   gives a categorical distribution over ``n_bins`` equal bins of [0, 1] (the scaled controls) or of
   [``rate_low_hz``, ``rate_high_hz``] (the vibrato rate), uniform within a bin: a piecewise-constant density.
   Bins model the corpus's point masses (a third of the notes have no vibrato at all, vibrato = 0) and
   multi-modal controls that a Gaussian or a regression cannot.

The vibrato rate is last in the order and is not fed back to the next note, so the sum of the first six terms of
:meth:`ExpressionPrior.log_prob_terms` is the exact log-density of the six scaled controls with the rate
marginalised out. The rate's term counts only on notes whose target has vibrato (target rate > 0: the extractor
gives rate 0 without vibrato), since a rate is meaningless there; sampled rates of notes without vibrato are
still plausible rates (from the range) so that a user who raises the vibrato later gets a sensible one.

Temperature 0 is deterministic: each output takes its distribution's ``point_estimate`` (``mean`` by default:
it minimises the squared error, which is what MIDI-DDSP's regression optimised; ``median`` and ``mode``
are the alternatives; measured on the corpus's valid split, overall RMSE 0.148 / 0.149 / 0.196) and feeds it
on to the next outputs and notes. Temperature ``T`` > 0 divides the logits
by ``T``. Sampling draws from a local :class:`torch.Generator` (the global RNG is never touched).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mididdsp.expression.prior_settings import (  # noqa: F401 - re-exported, as before the split
    GAP_CLIP_S, N_CONTROLS, N_FEATURES, PHRASE_NOTES_SCALE, POINT_ESTIMATES, PRIOR_OUTPUTS, RATE_INDEX, PriorConfig)


# ------------------------------------------------------------------------------------------------ features
def check_mask(note_mask: torch.Tensor) -> torch.Tensor:
    """The valid-note count of each row, [B] long; ValueError unless every row's valid notes come first."""
    mask = note_mask.bool()
    if mask.shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("note_mask: each row's valid notes must come first (padding only at the end)")
    return mask.sum(dim=1)


def note_features(notes: torch.Tensor, note_mask: torch.Tensor, rest_seconds: float = 0.25) -> torch.Tensor:
    """Per-note input features, [B, N, 4] (start_s, end_s, pitch, velocity) -> [B, N, N_FEATURES], 0 on padding.

    Features (all roughly of unit scale): pitch ((midi - 64) / 24), log duration (ln s), gap from the previous
    note's end and to the next note's start (s, signed, clipped to GAP_CLIP_S; 2 s where there is none),
    velocity / 127 and its log (levels in dB are nearer linear in log velocity), notes since / until the
    nearest phrase break (/ 16) and the fraction of the phrase done,
    intervals from the previous / to the next note (octaves, clipped to +-2), and rest-before / rest-after flags.
    """
    mask = note_mask.bool()
    batch, count = mask.shape
    start, end, pitch, velocity = notes.float().unbind(-1)
    has_prev = torch.zeros_like(mask)
    has_prev[:, 1:] = mask[:, 1:] & mask[:, :-1]
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, :-1] & mask[:, 1:]
    low, high = GAP_CLIP_S
    gap_prev = torch.zeros_like(start)
    gap_prev[:, 1:] = start[:, 1:] - end[:, :-1]
    gap_prev = torch.where(has_prev, gap_prev.clamp(low, high), torch.full_like(start, high))
    gap_next = torch.zeros_like(start)
    gap_next[:, :-1] = start[:, 1:] - end[:, :-1]
    gap_next = torch.where(has_next, gap_next.clamp(low, high), torch.full_like(start, high))
    interval_prev = torch.zeros_like(pitch)
    interval_prev[:, 1:] = pitch[:, 1:] - pitch[:, :-1]
    interval_prev = torch.where(has_prev, (interval_prev / 12.0).clamp(-2.0, 2.0), torch.zeros_like(pitch))
    interval_next = torch.zeros_like(pitch)
    interval_next[:, :-1] = pitch[:, 1:] - pitch[:, :-1]
    interval_next = torch.where(has_next, (interval_next / 12.0).clamp(-2.0, 2.0), torch.zeros_like(pitch))
    rest_before = gap_prev > rest_seconds   # also true for a voice's first note
    rest_after = gap_next > rest_seconds
    # Notes since the phrase's first note: index minus the running maximum of the phrase-start indices.
    index = torch.arange(count, device=notes.device).expand(batch, count)
    first = torch.where(rest_before, index, torch.zeros_like(index)).cummax(dim=1).values
    since = (index - first).float()
    # Notes until the phrase's last note: the same from the right (running minimum of the phrase-end indices).
    last_marks = torch.where(rest_after, index, torch.full_like(index, count))
    last = last_marks.flip(1).cummin(dim=1).values.flip(1)
    until = (last - index).float()
    fraction = since / (since + until).clamp(min=1.0)
    duration = (end - start).clamp(min=0.02)  # 20 ms floor: a zero-length note must not give -inf
    features = torch.stack([
        (pitch - 64.0) / 24.0, duration.log(), gap_prev, gap_next, velocity / 127.0,
        (velocity.clamp(min=1.0) / 127.0).log(),
        (since / PHRASE_NOTES_SCALE).clamp(max=2.0), (until / PHRASE_NOTES_SCALE).clamp(max=2.0), fraction,
        interval_prev, interval_next, rest_before.float(), rest_after.float()], dim=-1)
    return features * mask.unsqueeze(-1)


def smoothed_targets(index: torch.Tensor, bins: int, width: float) -> torch.Tensor:
    """Soft targets: a Gaussian of ``width`` bins around each target bin, [...] long -> [..., bins] summing to 1.
    The mass beyond either edge is given to the edge bin."""
    edges = torch.arange(bins + 1, device=index.device, dtype=torch.float32) - 0.5  # bin k spans [k - .5, k + .5)
    cdf = torch.special.ndtr((edges - index.unsqueeze(-1).float()) / width)
    cdf[..., 0], cdf[..., -1] = 0.0, 1.0
    return cdf[..., 1:] - cdf[..., :-1]


# ------------------------------------------------------------------------------------------------ model
class ExpressionPrior(nn.Module):
    """p(expression | notes, instrument), autoregressive over notes and over the 7 outputs of a note.

    Inputs of every method: ``notes`` float [B, N, 4] (start_s, end_s, pitch, velocity; one monophonic voice per
    row, sorted by start), ``note_mask`` bool [B, N] (valid notes first, padding after), ``instrument`` long [B].
    Values: [B, N, 7] in :data:`PRIOR_OUTPUTS` order, the six scaled controls in [0, 1] then the rate in Hz.
    """

    def __init__(self, config: PriorConfig | dict | None = None) -> None:
        super().__init__()
        config = PriorConfig.from_dict(config) if isinstance(config, dict) else (config or PriorConfig())
        self.config = config
        hidden = config.hidden_size
        self.instrument_embedding = (nn.Embedding(config.n_instruments, config.instrument_embedding)
                                     if config.instrument_embedding > 0 else None)
        input_size = N_FEATURES + (config.instrument_embedding if self.instrument_embedding is not None else 0)
        self.input_size = input_size
        self.input_mlp = nn.Sequential(nn.Linear(input_size, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(),
                                       nn.Linear(hidden, hidden), nn.LeakyReLU())
        self.context_gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        context_size = 2 * hidden
        # Autoregression input: the context, the previous note's 6 controls and a flag "the previous note is known".
        self.ar_gru = nn.GRU(context_size + N_CONTROLS + 1, config.ar_size, batch_first=True)
        # Head j sees the note's state (context, autoregressive state, and the note's own features and
        # instrument, skipping past the GRUs so that simple relations such as velocity -> volume stay simple)
        # and its outputs 0 .. j-1 (only scaled controls: the rate is last).
        state_size = context_size + config.ar_size + input_size
        per_value = 1 + config.value_bumps
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(state_size + j * per_value, config.head_size), nn.LeakyReLU(),
                          nn.Linear(config.head_size, config.n_bins))
            for j in range(len(PRIOR_OUTPUTS)))

    # -------------------------------------------------------------------------------------------- pieces
    def context(self, notes: torch.Tensor, note_mask: torch.Tensor, instrument: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bidirectional note context [B, N, 2 * hidden_size] and the per-note inputs (features and instrument
        embedding) [B, N, input_size]; both 0 on padding."""
        lengths = check_mask(note_mask)
        batch, count = note_mask.shape
        inputs = [note_features(notes, note_mask, self.config.rest_seconds)]
        if self.instrument_embedding is not None:
            inputs.append(self.instrument_embedding(instrument.long()).unsqueeze(1).expand(-1, count, -1))
        inputs = torch.cat(inputs, dim=-1) * note_mask.unsqueeze(-1)
        hidden = self.input_mlp(inputs)
        # Packed, so that the backward direction of a short row starts at its own last note, not in its padding.
        packed = pack_padded_sequence(hidden, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        context = pad_packed_sequence(self.context_gru(packed)[0], batch_first=True, total_length=count)[0]
        return self.dropout(context * note_mask.unsqueeze(-1)), inputs

    def to_unit(self, values: torch.Tensor) -> torch.Tensor:
        """[..., 7] values -> the [0, 1] axis of each output's bins (the rate mapped from its Hz range, clipped)."""
        low, high = self.config.rate_low_hz, self.config.rate_high_hz
        rate = ((values[..., RATE_INDEX:] - low) / (high - low))
        return torch.cat([values[..., :N_CONTROLS], rate], dim=-1).clamp(0.0, 1.0)

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_unit` inside the ranges: [..., 7] on [0, 1] -> scaled controls and rate in Hz."""
        low, high = self.config.rate_low_hz, self.config.rate_high_hz
        return torch.cat([unit[..., :N_CONTROLS], low + unit[..., RATE_INDEX:] * (high - low)], dim=-1)

    @staticmethod
    def previous_inputs(unit: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Autoregression inputs: the previous note's 6 controls and its known-flag, [B, N, 7] (zeros at note 0).

        ``unit`` [B, N, >=6] on [0, 1]; ``known`` [B, N] bool (the note's values exist: valid and present)."""
        current = torch.cat([unit[..., :N_CONTROLS] * known.unsqueeze(-1), known.unsqueeze(-1).float()], dim=-1)
        return torch.cat([torch.zeros_like(current[:, :1]), current[:, :-1]], dim=1)

    def encode_values(self, unit: torch.Tensor) -> torch.Tensor:
        """A note's earlier outputs [..., j] on [0, 1] -> head inputs [..., j * (1 + value_bumps)]: each value and
        Gaussian bumps (width one bump spacing) centred on a grid over [0, 1]. A categorical head that must move
        its mass with a conditioning value (brightness following the volume) learns that from bumps at once,
        where a raw scalar needs many hidden units to build them."""
        bumps = self.config.value_bumps
        if bumps == 0 or unit.shape[-1] == 0:
            return unit
        centres = torch.linspace(0.0, 1.0, bumps, device=unit.device, dtype=unit.dtype)
        encoded = torch.exp(-0.5 * ((unit.unsqueeze(-1) - centres) * (bumps - 1)) ** 2)
        return torch.cat([unit, encoded.flatten(-2)], dim=-1)

    def head_logits(self, state: torch.Tensor, unit: torch.Tensor, j: int) -> torch.Tensor:
        """Logits of output ``j``, [..., n_bins], from the note state [..., S] and its outputs < j (``unit``)."""
        return self.heads[j](torch.cat([state, self.encode_values(unit[..., :j])], dim=-1))

    # -------------------------------------------------------------------------------------------- likelihood
    def log_prob_terms(self, notes: torch.Tensor, note_mask: torch.Tensor, instrument: torch.Tensor,
                       targets: torch.Tensor, target_mask: torch.Tensor | None = None,
                       smoothing: float = 0.0) -> torch.Tensor:
        """Per-output log-densities under teacher forcing, [B, N, 7] (0 where not counted).

        Densities are on each output's [0, 1] bin axis (the rate's axis is its Hz range mapped to [0, 1]), so
        ``log p = log softmax(logits)[bin] + log n_bins``. ``target_mask`` [B, N] bool: the notes whose targets
        are real (default: ``note_mask``); other notes count 0 and are fed to the autoregression as unknown.
        The rate term counts only where the target rate is > 0 (the note has vibrato).

        ``smoothing`` > 0 (a training regulariser, in bins): each term is instead the expected log-density under a
        Gaussian of that width around the target's bin (mass beyond an edge goes to the edge bin, so the point
        masses at 0 and 1 stay sharp). With 2 000 notes, exact targets let the bins grow spikes on the training
        values; smoothing keeps the densities smooth and the held-out likelihood higher."""
        mask = note_mask.bool() if target_mask is None else (target_mask.bool() & note_mask.bool())
        unit = self.to_unit(targets.float())
        context, inputs = self.context(notes, note_mask, instrument)
        known = mask
        if self.training and self.config.ar_dropout > 0:
            known = mask & (torch.rand(mask.shape, device=mask.device) >= self.config.ar_dropout)
        ar_state = self.ar_gru(torch.cat([context, self.previous_inputs(unit, known)], dim=-1))[0]
        state = torch.cat([context, ar_state, inputs], dim=-1)
        bins = self.config.n_bins
        index = (unit * bins).long().clamp(0, bins - 1)
        weights = smoothed_targets(index, bins, smoothing) if smoothing > 0 else None
        terms = []
        for j in range(len(PRIOR_OUTPUTS)):
            log_probs = torch.log_softmax(self.head_logits(state, unit, j), dim=-1)
            if weights is None:
                term = log_probs.gather(-1, index[..., j:j + 1]).squeeze(-1)
            else:
                term = (weights[..., j, :] * log_probs).sum(dim=-1)
            terms.append(term + math.log(bins))
        terms = torch.stack(terms, dim=-1)
        counted = mask.unsqueeze(-1).expand_as(terms).clone()
        counted[..., RATE_INDEX] &= targets[..., RATE_INDEX] > 0
        return torch.where(counted, terms, torch.zeros_like(terms))

    def log_prob(self, notes: torch.Tensor, note_mask: torch.Tensor, instrument: torch.Tensor,
                 targets: torch.Tensor, target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-note log-likelihood of ``targets`` [B, N, 7] (teacher forcing), [B, N] nats; 0 on padding.
        The training loss is its negative mean over the counted notes."""
        return self.log_prob_terms(notes, note_mask, instrument, targets, target_mask).sum(dim=-1)

    # -------------------------------------------------------------------------------------------- sampling
    def point(self, logits: torch.Tensor) -> torch.Tensor:
        """The ``point_estimate`` of each distribution, [..., n_bins] logits -> [...] on [0, 1]."""
        bins = logits.shape[-1]
        probs = torch.softmax(logits, dim=-1)
        centres = (torch.arange(bins, device=logits.device, dtype=probs.dtype) + 0.5) / bins
        if self.config.point_estimate == "mode":
            return centres[probs.argmax(dim=-1)]
        if self.config.point_estimate == "median":
            return self.inverse_cdf(probs, torch.full_like(probs[..., 0], 0.5))
        return (probs * centres).sum(dim=-1)

    @staticmethod
    def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Quantile ``u`` [...] (in [0, 1)) of the piecewise-uniform density of ``probs`` [..., n_bins] on [0, 1]."""
        bins = probs.shape[-1]
        cdf = probs.cumsum(dim=-1)
        target = u * cdf[..., -1]
        index = torch.searchsorted(cdf, target.unsqueeze(-1)).clamp(max=bins - 1)
        below = torch.where(index > 0, cdf.gather(-1, (index - 1).clamp(min=0)),
                            torch.zeros_like(index, dtype=cdf.dtype))
        mass = probs.gather(-1, index).clamp(min=1e-12)
        within = ((target.unsqueeze(-1) - below) / mass).clamp(0.0, 1.0)
        return ((index + within) / bins).squeeze(-1)

    @torch.no_grad()
    def sample(self, notes: torch.Tensor, note_mask: torch.Tensor, instrument: torch.Tensor,
               temperature: float = 1.0, seed: int | None = 0, fixed_values: torch.Tensor | None = None,
               fixed_mask: torch.Tensor | None = None, compiled: bool = False) -> torch.Tensor:
        """Expression for every note, [B, N, 7] (:data:`PRIOR_OUTPUTS`; controls in [0, 1], rate in Hz; 0 on padding).

        ``temperature`` 0: deterministic (``point_estimate`` of each output); T > 0: logits / T. ``seed``: the
        local generator's seed (same seed, same table; None: a fresh random seed). ``fixed_values`` [B, N, 7]
        with ``fixed_mask`` [B, N, 7] bool: those values are fed to the autoregression in place of samples and
        returned unchanged (bit-exact for float32 values; the table is float32; values outside the ranges are
        clipped into them only where they are conditioned on); the rest are sampled given them. The draws do not
        depend on which
        values are fixed (the uniforms are drawn up front), so fixing a value changes the others only through
        what the model conditions on.

        ``compiled``: run the note loop compiled (:mod:`mididdsp.expression.prior_sampling`, CPU, numba; about 10x
        less work). Its values equal the torch loop's to float rounding (about 1e-5 after hundreds of notes: the
        autoregression carries the rounding on), which moves a render by up to -76 dB of the mix (measured on the
        batch benchmark's chorales); the render takes it (its bits are the same in every process), training and evaluation
        keep the torch loop by default."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        mask = note_mask.bool()
        batch, count = mask.shape
        device = notes.device
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        uniforms = torch.rand(batch, count, len(PRIOR_OUTPUTS), generator=generator, device=device)
        if (fixed_mask is None) != (fixed_values is None):
            raise ValueError("fixed_values and fixed_mask go together: give both or neither")
        if fixed_mask is None or fixed_values is None:
            fixed_mask = torch.zeros(batch, count, len(PRIOR_OUTPUTS), dtype=torch.bool, device=device)
            fixed_values = torch.zeros(batch, count, len(PRIOR_OUTPUTS), device=device)
        fixed_mask = fixed_mask.bool() & mask.unsqueeze(-1)
        fixed_unit = self.to_unit(fixed_values.float())
        context, inputs = self.context(notes, mask, instrument)
        if compiled and device.type == "cpu":
            from mididdsp.expression import prior_sampling

            if prior_sampling.available():
                unit = prior_sampling.sample_unit(self, context, inputs, mask.sum(dim=1), uniforms, fixed_mask,
                                                  fixed_unit, temperature)
                values = torch.where(fixed_mask, fixed_values.float(), self.from_unit(unit))
                return values * mask.unsqueeze(-1)
        return self._sample_loop(context, inputs, mask, uniforms, fixed_mask, fixed_values, fixed_unit, temperature)

    def _sample_loop(self, context: torch.Tensor, inputs: torch.Tensor, mask: torch.Tensor, uniforms: torch.Tensor,
                     fixed_mask: torch.Tensor, fixed_values: torch.Tensor, fixed_unit: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        """The note-by-note loop of :meth:`sample` in torch (any device); shapes as there."""
        batch, count = mask.shape
        device = context.device
        values = torch.zeros(batch, count, len(PRIOR_OUTPUTS), device=device)
        previous = torch.zeros(batch, N_CONTROLS + 1, device=device)
        hidden = None
        # the heads' layers called as functions, the bump centres made once, a note's outputs kept as columns: the
        # same operations on the same shapes as head_logits, so the same bits, with less per-step overhead
        heads = [(head[0].weight, head[0].bias, head[1].negative_slope, head[2].weight, head[2].bias)
                 for head in self.heads]
        bumps = self.config.value_bumps
        centres = torch.linspace(0.0, 1.0, bumps, device=device, dtype=values.dtype) if bumps else None
        for i in range(count):  # a Python loop over notes (batched over voices): notes are few
            step = torch.cat([context[:, i], previous], dim=-1).unsqueeze(1)
            output, hidden = self.ar_gru(step, hidden)
            state = torch.cat([context[:, i], output[:, 0], inputs[:, i]], dim=-1)
            columns: list[torch.Tensor] = []
            for j, (weight, bias, slope, out_weight, out_bias) in enumerate(heads):
                head_input = state
                if j:
                    earlier = torch.stack(columns, dim=-1)
                    if centres is not None:
                        encoded = torch.exp(-0.5 * ((earlier.unsqueeze(-1) - centres) * (bumps - 1)) ** 2)
                        earlier = torch.cat([earlier, encoded.flatten(-2)], dim=-1)
                    head_input = torch.cat([state, earlier], dim=-1)
                logits = F.linear(F.leaky_relu(F.linear(head_input, weight, bias), slope), out_weight, out_bias)
                if temperature == 0:
                    drawn = self.point(logits)
                else:
                    drawn = self.inverse_cdf(torch.softmax(logits / temperature, dim=-1), uniforms[:, i, j])
                columns.append(torch.where(fixed_mask[:, i, j], fixed_unit[:, i, j], drawn))
            unit = torch.stack(columns, dim=-1)
            values[:, i] = self.from_unit(unit)
            known = mask[:, i].float().unsqueeze(-1)
            previous = torch.cat([unit[:, :N_CONTROLS] * known, known], dim=-1)
        values = torch.where(fixed_mask, fixed_values.to(values.dtype), values)
        return values * mask.unsqueeze(-1)
