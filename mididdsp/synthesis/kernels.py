"""The synthesis generator's per-frame stages compiled for inference (numba): no gradient, CPU.

Training runs the tensor code in :mod:`mididdsp.synthesis.generator`, which these equal to float rounding
(tests/test_synthesis_generator.py). In a render the generator's cost is per frame, and outside its convolutions
most of it was elementwise passes over [T, 60] and [T, 65] tensors and the centroid solve:

* the centroid tilt. :func:`~mididdsp.synthesis.tilt.tilt_to_centroid` finds, per frame, the ``beta`` for
  which ``h = softmax(logits + beta k)`` has the centroid asked for, with batched torch Newton steps (a softmax
  over all harmonics of every open frame per step, convergence checked every 4 steps). Here each frame is solved
  on its own in float64 (one exp per harmonic, then the tilt ``exp(beta)^k`` by products): Newton steps inside a
  shrinking bracket, started from the previous frame's ``beta`` (neighbouring frames differ little, so most frames
  take 2-3 steps), until the step is below float32 resolution. The result is the exact solution rounded to
  float32; the torch solve approaches it to :data:`~mididdsp.synthesis.tilt.TILT_TOLERANCE` and then takes a
  last Newton step, so the two agree to float rounding, whatever the start.
* and, in numpy (its float32 tanh and exp are vectorised, several times faster than libm's per element in a
  kernel), the harmonic logits before the tilt and the noise bands' magnitudes; the Nyquist cut is a count of
  harmonics per frame that the solve honours, not a [T, K] mask.

Arrays in, arrays out (numpy; torch tensors are read through ``numpy.asarray``), so the render's inference
(:mod:`mididdsp.synthesis.inference`) runs without torch. numba is imported on first use; :func:`available` says
whether it can be.
"""
from __future__ import annotations

import math

import numpy as np

from mididdsp.dsp.kernels import available  # noqa: F401 - re-exported: whether the kernels can run
from mididdsp.native import SYNTHESIS, kernel

BRACKET = 30.0        # |beta| bound, as in the torch solve
MAX_STEPS = 60        # Newton or bisection steps per frame (bisection alone would need about 40 to reach 1e-10)
STEP_TOLERANCE = 1e-10  # |beta change| at which a frame is solved (far below what float32 output resolves)
POWER_LIMIT = 600.0   # |beta| * K below which exp(beta)^k is formed by products (exp(600) fits float64's range)


def _array(values, dtype=np.float32) -> np.ndarray:
    """A contiguous numpy array of ``values`` (a numpy array, or a CPU torch tensor without gradient)."""
    return np.ascontiguousarray(np.asarray(values), dtype=dtype)


def tilt_to_centroid_inference(logits, centroid) -> np.ndarray:
    """``softmax(logits + beta k)`` with ``beta`` per frame such that the centroid is ``centroid`` (no gradient).

    Args:
        logits: [..., K] float32 harmonic logits (masked harmonics at -1e4).
        centroid: [...] target centroid in harmonic numbers, reachable (1 .. the highest unmasked harmonic).
    Returns:
        [..., K] float32 distributions (each sums to 1).
    """
    logits = _array(logits)
    flat = logits.reshape(-1, logits.shape[-1])
    out = np.empty(flat.shape, np.float32)
    kernel(SYNTHESIS, "tilt")(flat, _array(centroid).reshape(-1), out)
    return out.reshape(logits.shape)


def harmonic_distribution(raw, highest, centroid, squash: float) -> np.ndarray:
    """The generator's harmonic distribution from its raw harmonic outputs: logits ``squash * tanh(raw / squash)``,
    the harmonics from ``highest`` up cut (Nyquist), tilted to ``centroid``.

    The training path also removes the logits' least-squares line in k
    (:func:`~mididdsp.synthesis.tilt.without_tilt`), which only steers its gradients: a line added to the logits
    changes no tilted distribution (its constant cancels in the softmax, its slope moves the solved beta by as
    much), so it is left out here, and so is the shift by the largest logit (the squashed logits lie within
    +-``squash``, so ``exp(logit - squash)`` is at least e^-24: no underflow).

    Args:
        raw: [..., T, K] network outputs (any strides); highest: [..., T] float32, the number of harmonics kept per
            frame (:func:`nyquist_count`); centroid: [..., T] reachable target (1 .. ``highest``).
    Returns:
        [..., T, K] float32 distributions.
    """
    raw = np.asarray(raw)
    scaled = np.tanh(raw * np.float32(1.0 / squash), dtype=np.float32)
    scaled *= np.float32(squash)
    scaled -= np.float32(squash)
    np.exp(scaled, out=scaled)
    out = np.empty(scaled.shape, np.float32)
    width = raw.shape[-1]
    kernel(SYNTHESIS, "tilt_kept")(scaled.reshape(-1, width), _array(highest).reshape(-1), _array(centroid).reshape(-1),
                             out.reshape(-1, width))
    return out


def layer_norm_leaky(hidden: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, slope: float,
                     out: np.ndarray, then_add: np.ndarray) -> np.ndarray:
    """``leaky_relu(layer_norm(hidden, weight, bias, eps), slope)`` over each row of [T, C] float32 ``hidden``
    (contiguous), written to ``out`` [T, C], and then ``then_add`` [C] added to ``hidden`` in place, in one pass:
    the generator's norm and activation before each dilated convolution, and that convolution's bias into the
    residual (in torch the norm and activation took a fifth of its inference, two passes, the norm's the slower).
    ``hidden`` and ``out`` are written in place (numpy arrays, or numpy views of torch tensors)."""
    kernel(SYNTHESIS, "layer_norm_leaky")(hidden, _array(weight), _array(bias), np.float32(eps), np.float32(slope), out,
                                    _array(then_add))
    return out


def nyquist_count(f0_hz, n_harmonics: int, limit_hz: float) -> np.ndarray:
    """[..., T] f0 (Hz) -> [..., T] float32: how many of harmonics 1..``n_harmonics`` lie under ``limit_hz`` (at
    least 1), the count of the training path's ``f0 * k < limit`` (float32 products, the same comparisons)."""
    f0_hz = _array(f0_hz)
    out = np.empty(f0_hz.shape, np.float32)
    kernel(SYNTHESIS, "nyquist_count")(f0_hz.reshape(-1), n_harmonics, np.float32(limit_hz), out.reshape(-1))
    return out


def noise_magnitudes(raw, level_db, spread, silent, shape_db: float, silence_db: float) -> np.ndarray:
    """Linear noise-band magnitudes [..., T, M] from the raw band outputs [..., T, M], the noise level [..., T]
    (dB), the bands' spread [..., T] (0..1) and the silent frames [..., T] bool (at ``silence_db``): the
    generator's ``10 ** ((level + band - mean(band)) / 20)``, band = shape_db * spread * tanh(raw / 3)."""
    band = np.tanh(np.asarray(raw) * np.float32(1.0 / 3.0), dtype=np.float32)
    band *= (np.float32(shape_db) * np.asarray(spread, np.float32))[..., None]
    band += (np.asarray(level_db, np.float32) - band.mean(-1, dtype=np.float32))[..., None]
    band[np.asarray(silent, bool)] = silence_db
    band *= np.float32(math.log(10.0) / 20.0)
    return np.exp(band, out=band)


FRAME_CONTROLS = ("f0_hz", "amplitude_db", "noise_db", "spread", "centroid", "highest")
FRAME_POSITIONS = ("note", "active", "since_onset", "length", "since_end")  # a voice's frame layout, [T] each


def frame_controls(raw: np.ndarray, layout: dict[str, np.ndarray], per_note: dict[str, np.ndarray],
                   settings: np.ndarray) -> dict[str, np.ndarray]:
    """The generator's per-frame controls after its network, for one voice, in one compiled pass (the tensor
    code's hundred elementwise passes over [T] took a sixth of its inference).

    Args:
        raw: [T, >= 6] float32 network outputs (the six heads first).
        layout: ``note``, ``since_onset``, ``length``, ``since_end`` [T] int64, ``active`` [T] bool, ``first``,
            ``stop`` [N] int64: the voice's :class:`~mididdsp.synthesis.generator.FrameLayout`.
        per_note: ``physical`` [N, 7] (dB, dB, fraction, cents, harmonic, dB, Hz), ``pitch``, ``previous_pitch``,
            ``gap`` (s), ``next_pitch``, ``next_gap`` (s), ``phases`` (rad) [N].
        settings: [19] float64, the generator's constants in the kernel's order (``SynthesisGenerator.
            :func:`mididdsp.synthesis.settings.kernel_settings`).
    Returns:
        [T] float32 each: ``f0_hz``, ``amplitude_db`` (the silence level before the first note), ``noise_db``,
        ``spread`` (the noise bands' 0..1), ``centroid`` (harmonic number) and ``highest`` (harmonics under
        Nyquist's limit, at least 1).
    """
    frames = raw.shape[0]
    out = {name: np.empty(frames, np.float32) for name in FRAME_CONTROLS}
    arrays = [np.asarray(layout[name]) for name in (*FRAME_POSITIONS, "first", "stop")]
    arrays += [np.asarray(per_note[name]) for name in ("physical", "pitch", "previous_pitch", "gap", "next_pitch",
                                                       "next_gap", "phases")]
    kernel(SYNTHESIS, "frame_controls")(np.asarray(raw), *arrays, settings, *(out[name] for name in FRAME_CONTROLS))
    return out


def frame_positions(first: np.ndarray, stop: np.ndarray, end: np.ndarray, n_frames: int, start_frame: int
                    ) -> dict[str, np.ndarray]:
    """The frame columns of :func:`mididdsp.synthesis.generator.frame_layout` for one voice: ``first``, ``stop``,
    ``end`` [N] int64 (time order, padding notes last at "never") -> ``note``, ``since_onset``, ``length``,
    ``since_end`` [n_frames] int64 and ``active`` [n_frames] bool for frames ``start_frame ..``."""
    out = {name: np.empty(n_frames, bool if name == "active" else np.int64) for name in FRAME_POSITIONS}
    kernel(SYNTHESIS, "frame_positions")(_array(first, np.int64), _array(stop, np.int64), _array(end, np.int64),
                                   int(start_frame), *(out[name] for name in FRAME_POSITIONS))
    return out


def frame_features(per_note: np.ndarray, scaled: np.ndarray, layout: dict[str, np.ndarray]) -> np.ndarray:
    """``SynthesisGenerator.features`` of one voice in one pass: ``per_note`` [N, 6] and ``scaled`` [N, 5] float32
    note columns, ``layout`` the voice's :data:`FRAME_POSITIONS` [T] -> [T, 18] float32."""
    from mididdsp.dsp.constants import FRAME_RATE

    out = np.empty((layout["note"].shape[0], per_note.shape[1] + scaled.shape[1] + 7), np.float32)
    kernel(SYNTHESIS, "frame_features")(_array(per_note), _array(scaled), *(np.asarray(layout[name]) for name in FRAME_POSITIONS),
                                  float(FRAME_RATE), out)
    return out
