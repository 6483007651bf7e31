"""The expression prior's settings and constants, without torch: :class:`PriorConfig` (its ``model:`` section) and
the outputs' order. :mod:`mididdsp.expression.prior` (training, torch) and :mod:`mididdsp.expression.prior_inference`
(the render's, numpy) both read them from here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from mididdsp.expression.names import CONTROL_NAMES
from mididdsp.models import settings_from_dict

PRIOR_OUTPUTS = (*CONTROL_NAMES, "vibrato_rate_hz")
N_CONTROLS = len(CONTROL_NAMES)  # 6 scaled controls; output index 6 is the rate
RATE_INDEX = N_CONTROLS
N_FEATURES = 13
POINT_ESTIMATES = ("mean", "median", "mode")
GAP_CLIP_S = (-0.5, 2.0)       # gaps beyond 2 s say no more than "a long rest"; overlaps beyond 0.5 s are rare
PHRASE_NOTES_SCALE = 16.0      # notes-since/until-rest counts are divided by this (a typical phrase length)


@dataclass
class PriorConfig:
    """Sizes and settings of :class:`ExpressionPrior` (``model:`` section of the ``expression_prior`` config)."""

    n_instruments: int = 1
    instrument_embedding: int = 8    # 0 disables it
    hidden_size: int = 32            # input MLP and the bidirectional GRU (per direction)
    ar_size: int = 48                # the autoregressive GRU over notes
    head_size: int = 48              # hidden layer of each output head
    n_bins: int = 64                 # bins of every output distribution
    rate_low_hz: float = 3.0         # vibrato-rate range of the rate's bins (rates outside are clipped into it)
    rate_high_hz: float = 10.0
    rest_seconds: float = 0.25       # a gap longer than this ends a phrase
    dropout: float = 0.3             # on the context features, training only
    ar_dropout: float = 0.5          # training only: probability that a note's predecessor is hidden from the
                                     # autoregression (as if unknown), so the note features must carry the level
    point_estimate: str = "mean"     # what temperature 0 returns: mean | median | mode of each output
    value_bumps: int = 16            # a note's earlier outputs reach the later heads also as this many
                                     # Gaussian bumps over [0, 1] (0: only the raw values)

    @classmethod
    def from_dict(cls, values: dict) -> "PriorConfig":
        config = settings_from_dict(cls, values)
        if config.point_estimate not in POINT_ESTIMATES:
            raise ValueError(f"model.point_estimate must be one of {POINT_ESTIMATES}, got {config.point_estimate!r}")
        if not 0 < config.rate_low_hz < config.rate_high_hz:
            raise ValueError(f"model.rate_low_hz / rate_high_hz: expected 0 < low < high, got "
                             f"{config.rate_low_hz}, {config.rate_high_hz}")
        if config.value_bumps < 0:
            raise ValueError(f"model.value_bumps must be >= 0, got {config.value_bumps}")
        for name in ("n_instruments", "hidden_size", "ar_size", "head_size", "n_bins"):
            if int(getattr(config, name)) < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {getattr(config, name)}")
        for name in ("dropout", "ar_dropout"):
            if not 0.0 <= getattr(config, name) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(config, name)}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)
