"""The synthesis generator's inference without torch: BLAS for the matrix products, the compiled kernels of
:mod:`mididdsp.synthesis.kernels` for the rest. What a render runs (``mididdsp render``, a batch's workers, the
editor), so that a process that only renders never imports torch (its import was about 1 s of every render's
start, the batch driver's too).

:class:`GeneratorInference` holds a trained :class:`~mididdsp.synthesis.generator.SynthesisGenerator`'s weights
as arrays and computes what its ``forward`` computes without gradient on the CPU, for one voice at a time, equal to
it to float rounding (tests/test_inference.py): the same frame layout, features and per-frame controls (the same
compiled kernels), the same vibrato phases from the same seed (:mod:`mididdsp.seeds`). The network's layers are BLAS
products that accumulate into their output in place (``sgemm`` with beta 1, as torch's ``addmm_``), in the
transposed view (``C^T += W @ X^T``: a C-ordered [T, C] array is its transpose in Fortran order): a dilated
convolution is three of them into the residual, one per tap, on rows shifted by the dilation, no copies. On one
thread a layer over 3 000 frames took 0.53 ms so, against 0.65 ms as one ``[T, C] @ [C, 3C]`` product and the
shifted sums, and 0.44 ms in torch (MKL): OpenBLAS's sgemm runs at about 120-140 GFLOP/s on this machine's core.

Controls are one voice's arrays, without a batch axis: ``f0_hz`` [T] Hz, ``amplitude`` [T] linear,
``harmonic_distribution`` [T, K], ``noise_magnitudes`` [T, M] linear, and ``amplitude_db`` [T] (dB).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from mididdsp.scipy_kernels import sgemm
from mididdsp.dsp.constants import AMPLITUDE_UPSAMPLING, FRAME_RATE, NYQUIST_FADE, hop_size_for
from mididdsp.seeds import torch_uniform
from mididdsp.synthesis import kernels
from mididdsp.synthesis.spans import generator_pieces
from mididdsp.synthesis.settings import (HEADS, LEGATO_GAP_S, LOGIT_RANGE, SCALED_INPUTS, SILENCE_DB, GeneratorConfig,
                                         kernel_settings, receptive_field)

CONTROL_KEYS = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes", "amplitude_db")
NORM_EPS = 1e-5   # ChannelNorm's
SLOPE = 0.1       # the stack's leaky ReLU


class GeneratorInference:
    """A synthesis generator's weights (``state``, the module's state dict as numpy arrays) and config, for
    rendering. ``metadata``: the model directory's whole config (instruments, statistics, ...)."""

    def __init__(self, config: GeneratorConfig | dict, state: dict[str, np.ndarray], metadata: dict | None = None):
        self.config = GeneratorConfig.from_dict(config) if isinstance(config, dict) else config
        self.metadata = metadata or {}
        config = self.config
        if config.kernel_size != 3:
            raise ValueError(f"model.kernel_size {config.kernel_size}: the inference path computes 3-tap "
                             f"convolutions")
        weight = lambda name: np.ascontiguousarray(state[name], np.float32)  # noqa: E731
        # the layers' weights [out, in] in Fortran order, as BLAS takes them (see _accumulate)
        input_weight = weight("input.weight")[:, :, 0]                           # [C, F + E]
        n_features = input_weight.shape[1] - config.instrument_embedding
        self.input_features = np.asfortranarray(input_weight[:, :n_features])   # [C, F]
        self.input_embedding = input_weight[:, n_features:]                     # [C, E]
        self.input_bias = weight("input.bias")
        self.embedding = weight("embedding.weight")                             # [instruments, E]
        self.blocks = [([np.asfortranarray(weight(f"blocks.{i}.weight")[:, :, k]) for k in range(3)],
                        weight(f"blocks.{i}.bias"), 2 ** i, weight(f"norms.{i}.weight"), weight(f"norms.{i}.bias"))
                       for i in range(config.layers)]
        self.output_weight = np.asfortranarray(weight("output.weight")[:, :, 0])   # [outputs, C]
        self.output_bias = weight("output.bias")
        self.release = weight("release")                                        # [instruments]
        # [instruments, taps]; another kind of reverb's responses are given by the caller (:meth:`load`)
        self.reverb_response = weight("synth.reverb.impulse_response") if config.reverb == "learned" else None
        self.ranges = np.array([[float(v) for v in config.ranges[name]] for name in SCALED_INPUTS], np.float32)
        self.hop_size = hop_size_for(config.sample_rate)
        self.sample_rate = config.sample_rate
        self.nyquist_fade, self.amplitude_upsampling = NYQUIST_FADE, AMPLITUDE_UPSAMPLING

    @staticmethod
    def expected_shapes(config: GeneratorConfig) -> dict[str, tuple]:
        """The state dict's names and shapes a model of ``config`` has (as the torch module's)."""
        from mididdsp.synthesis.settings import N_FEATURES

        width, outputs = config.channels, HEADS + config.n_harmonics + config.n_noise_bands
        shapes = {"release": (config.n_instruments,), "embedding.weight": (config.n_instruments,
                                                                            config.instrument_embedding),
                  "input.weight": (width, N_FEATURES + config.instrument_embedding, 1), "input.bias": (width,)}
        for i in range(config.layers):
            shapes.update({f"blocks.{i}.weight": (width, width, config.kernel_size), f"blocks.{i}.bias": (width,),
                           f"norms.{i}.weight": (width,), f"norms.{i}.bias": (width,)})
        shapes.update({"output.weight": (outputs, width, 1), "output.bias": (outputs,)})
        if config.reverb == "learned":
            taps = int(round(config.reverb_seconds * config.sample_rate))
            shapes["synth.reverb.impulse_response"] = (config.n_instruments, taps)
        elif config.reverb == "exponential":  # its module makes the responses from these (load)
            shapes.update({"synth.reverb.gain": (config.n_instruments,), "synth.reverb.decay": (config.n_instruments,)})
        return shapes

    @classmethod
    def load(cls, directory: str | Path) -> "GeneratorInference":
        """A generator model directory (``config.yaml`` + ``weights.pt``) -> GeneratorInference; ModelError naming
        the file when it is missing, broken or does not fit its config."""
        from mididdsp.models import load_arrays

        directory = Path(directory)
        config, metadata, state = load_arrays(directory, ("SynthesisGenerator",), GeneratorConfig,
                                              cls.expected_shapes)
        model = cls(config, state, metadata)
        if config.reverb not in (None, "learned"):  # a parametric reverb: its responses made once, by its module
            import torch

            from mididdsp.models import load_model

            reverb = load_model(directory, expected=("SynthesisGenerator",)).synth.reverb
            with torch.no_grad():
                model.reverb_response = reverb.get_impulse_response(torch.arange(config.n_instruments)).numpy()
        return model

    # ------------------------------------------------------------------------------------------------ pieces
    def _softplus_release(self, instrument: int) -> np.float32:
        """softplus of the instrument's raw release parameter, float32 as torch's (x itself above 20)."""
        raw = self.release[int(instrument)]
        return raw if raw > 20.0 else np.log1p(np.exp(raw))

    def release_per_frame(self, instrument: int) -> float:
        """The instrument's release fall, dB per frame (100 * softplus dB/s, float32 arithmetic, as the module's)."""
        return float(np.float32(100.0) * self._softplus_release(instrument) / np.float32(FRAME_RATE))

    def release_frames(self, instrument: int, from_db: float) -> int:
        """Frames after a note stops until its release from ``from_db`` reaches :data:`SILENCE_DB`
        (:func:`mididdsp.synthesis.generator.release_frames`, the same arithmetic)."""
        per_frame = 100.0 * float(self._softplus_release(instrument)) / FRAME_RATE
        return max(0, math.ceil((from_db - SILENCE_DB) / per_frame))

    def impulse_response(self, instrument: int) -> np.ndarray | None:
        """[taps] float32 wet impulse response of the instrument's reverb (tap 0 is 0: the dry path is added by
        the mix), or None without a reverb."""
        if self.reverb_response is None:
            return None
        response = self.reverb_response[int(instrument)].copy()
        response[0] = 0.0
        return response

    def physical(self, expression: np.ndarray) -> np.ndarray:
        """[N, 7 or 8] scaled controls, rate (and level offset) -> [N, 7] physical values (the module's
        ``physical``)."""
        low, high = self.ranges[:, 0], self.ranges[:, 1]
        physical = low + np.clip(expression[:, :6], 0.0, 1.0) * (high - low)
        if expression.shape[1] > 7:
            physical[:, 0] += expression[:, 7]
            physical[:, 5] += expression[:, 7]
        return np.concatenate([physical, expression[:, 6:7]], axis=1).astype(np.float32)

    def network(self, features: np.ndarray, instrument: int) -> np.ndarray:
        """[T, F] features -> [T, outputs] raw outputs (the module's ``_network_inference``)."""
        frames = features.shape[0]
        hidden = np.empty((frames, len(self.input_bias)), np.float32)
        hidden[:] = self.input_bias + self.input_embedding @ self.embedding[int(instrument)]
        _accumulate(self.input_features, np.ascontiguousarray(features, np.float32), hidden)
        normed = np.empty_like(hidden)
        for weights, conv_bias, dilation, norm_weight, norm_bias in self.blocks:
            kernels.layer_norm_leaky(hidden, norm_weight, norm_bias, NORM_EPS, SLOPE, normed, conv_bias)
            for tap, weight in enumerate(weights):
                shift = (tap - 1) * dilation  # output frame t reads input frame t + shift (zero outside)
                if abs(shift) >= frames:
                    continue
                if shift >= 0:
                    _accumulate(weight, normed[shift:], hidden[:frames - shift])
                else:
                    _accumulate(weight, normed[:frames + shift], hidden[-shift:])
        np.maximum(hidden, hidden * np.float32(SLOPE), out=hidden)  # leaky ReLU (slope < 1)
        out = np.empty((frames, len(self.output_bias)), np.float32)
        out[:] = self.output_bias
        _accumulate(self.output_weight, hidden, out)
        return out

    def controls(self, notes: np.ndarray, expression: np.ndarray, instrument: int, n_frames: int,
                 start_frame: int = 0, seed: int | None = 0) -> dict[str, np.ndarray]:
        """One voice's controls over frames ``start_frame .. start_frame + n_frames - 1`` (the module's
        ``forward`` for one item): ``notes`` [N, 4] float32 in time order, ``expression`` [N, 7 or 8]; the vibrato
        phases drawn with ``seed`` (None: phase 0). Whole notes must lie in the frames (see :meth:`spans`)."""
        config = self.config
        notes = np.ascontiguousarray(notes, np.float32).reshape(-1, 4)
        expression = np.ascontiguousarray(expression, np.float32).reshape(len(notes), -1)
        start, end_s, pitch = notes[:, 0], notes[:, 1], notes[:, 2]
        first = frame_of(start)
        end = np.maximum(frame_of(end_s), first + 1)
        stop = np.minimum(end, np.append(first[1:], 1 << 40))
        layout = kernels.frame_positions(first, stop, end, n_frames, start_frame)
        neighbours = note_neighbours(notes)
        gap = neighbours["gap"]
        per_note = np.stack([pitch / np.float32(127.0), (pitch - neighbours["previous_pitch"]) / np.float32(12.0),
                             (np.clip(gap, -1, 1) < LEGATO_GAP_S).astype(np.float32),
                             np.clip(gap, 0, 2) / np.float32(2), np.clip(neighbours["next_gap"], 0, 2) / np.float32(2),
                             np.log(np.maximum(end_s - start, np.float32(1e-3))) / np.float32(4.0)], axis=1)
        scaled = np.clip(expression[:, [0, 1, 2, 4, 5]], 0, 1)
        raw = self.network(kernels.frame_features(per_note, scaled, layout), instrument)
        physical = self.physical(expression)
        phases = (np.zeros(max(len(notes), 1), np.float32) if seed is None else
                  torch_uniform(int(seed), (1, max(len(notes), 1)))[0] * np.float32(2) * np.float32(math.pi))
        frame = {**layout, "first": first, "stop": stop}
        controls = kernels.frame_controls(raw, frame, {"physical": physical, "pitch": np.ascontiguousarray(pitch),
                                                       "phases": phases, **neighbours},
                                          kernel_settings(config, self.release_per_frame(instrument)))
        harmonics = slice(HEADS, HEADS + config.n_harmonics)
        noise = kernels.noise_magnitudes(raw[:, HEADS + config.n_harmonics:], controls["noise_db"],
                                         controls["spread"], layout["note"] < 0, config.noise_shape_db, SILENCE_DB)
        distribution = kernels.harmonic_distribution(raw[:, harmonics], controls["highest"], controls["centroid"],
                                                     LOGIT_RANGE)
        level_db = controls["amplitude_db"]
        return {"f0_hz": controls["f0_hz"], "amplitude": np.power(np.float32(10.0), level_db / np.float32(20.0)),
                "harmonic_distribution": distribution, "noise_magnitudes": noise, "amplitude_db": level_db}

    def spans(self, notes: np.ndarray, expression: np.ndarray, instrument: int, n_frames: int,
              spans: list[tuple[int, int]], seed: int | None = 0, chunk_frames: int = 15000,
              counter: dict | None = None) -> list[dict[str, np.ndarray]]:
        """The controls of a voice of ``n_frames`` frames over the frame ranges ``spans`` only, one dict per span
        (:data:`CONTROL_KEYS`, ``stop - first`` frames each), as
        :func:`mididdsp.synthesis.generator.generate_spans` computes them: each piece with
        :func:`~mididdsp.synthesis.settings.receptive_field` frames of context either side, every note given to the
        model, spans longer than ``chunk_frames`` in pieces cut at note onsets. ``counter["generator_frames"]``
        (if given) is increased by the frames computed."""
        notes = np.ascontiguousarray(notes, np.float32).reshape(-1, 4)
        context = receptive_field(self.config) + 1
        onsets = frame_of(notes[:, 0]).tolist()
        results = []
        for span in generator_pieces(onsets, spans, chunk_frames, context, n_frames):
            pieces = []
            for first, last, start, stop in span:
                out = self.controls(notes, expression, instrument, stop - start, start, seed)
                pieces.append({key: out[key][first - start:last - start] for key in CONTROL_KEYS})
                if counter is not None:
                    counter["generator_frames"] = counter.get("generator_frames", 0) + stop - start
            results.append(pieces[0] if len(pieces) == 1 else
                           {key: np.concatenate([piece[key] for piece in pieces]) for key in CONTROL_KEYS})
        return results


def frame_of(seconds: np.ndarray) -> np.ndarray:
    """[N] float32 times (s) -> the nearest frame, int64, in float32 arithmetic as the module's frame layout."""
    return np.floor(seconds * np.float32(FRAME_RATE) + np.float32(0.5)).astype(np.int64)


def _accumulate(weight: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out += rows @ weight.T`` in place: ``weight`` [O, I] float32 in Fortran order, ``rows`` [T, I] and
    ``out`` [T, O] C-ordered float32 (row slices of such arrays too), as one BLAS ``sgemm`` on their transposes
    (``out^T += weight @ rows^T``, both Fortran-ordered views: no copy)."""
    if len(rows) == 0:
        return
    result = sgemm()(1.0, weight, rows.T, beta=1.0, c=out.T, overwrite_c=1)
    if not np.shares_memory(result, out):  # BLAS was handed a copy (an unexpected layout): keep the answer anyway
        out[...] = result.T


def note_neighbours(notes: np.ndarray) -> dict[str, np.ndarray]:
    """Each note's neighbours, [N] float32 each (:func:`mididdsp.synthesis.generator.note_neighbours` for one voice
    without padding): ``previous_pitch``, ``gap``, ``next_pitch``, ``next_gap``."""
    start, end, pitch = notes[:, 0], notes[:, 1], notes[:, 2]
    next_gap = np.full(len(notes), 10.0, np.float32)
    next_gap[:-1] = start[1:] - end[:-1]
    return {"previous_pitch": np.concatenate([pitch[:1], pitch[:-1]]),
            "gap": start - np.concatenate([start[:1] - np.float32(1.0), end[:-1]]),
            "next_pitch": np.concatenate([pitch[1:], pitch[-1:]]),
            "next_gap": next_gap}
