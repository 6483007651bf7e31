"""The compiled bodies of :mod:`mididdsp.dsp.kernels` (that module imports this one on first use; this one imports
numba). At module level so that numba's on-disk cache serves every process: defined inside a function (numba
itself a closure variable there), they missed the cache and the harmonic kernel compiled again in every process,
about a second of every render. Serial and ``nogil``: a render runs its voices on threads (the kernel itself on
numba's OpenMP pool spun beside one-thread trainings, and gave other bits when freshly compiled, 1 run in 2)."""
import math

import numba
import numpy as np

from mididdsp.dsp.kernels import PHASE_BLOCK


@numba.njit(fastmath=True, cache=True)
def _raised_cosine(position):
    """0.5 - 0.5 cos(pi x) = sin(pi x / 2)^2 for x in [0, 1], by sin's Taylor series to t^13 (error under
    1e-9; libm's cos per sample and fade-band harmonic cost more than all the other harmonics together)."""
    t = 0.5 * math.pi * position
    t2 = t * t
    sine = t * (1.0 + t2 * (-1.0 / 6 + t2 * (1.0 / 120 + t2 * (-1.0 / 5040 + t2 * (
        1.0 / 362880 + t2 * (-1.0 / 39916800 + t2 * (1.0 / 6227020800)))))))
    return sine * sine


@numba.njit(nogil=True, fastmath=True, cache=True)
def harmonic(sines, cosines, f0, amplitudes, next_weight, fade_weight, nyquist, fade, out):
    """sines / cosines of the fundamental's angle (float32) / f0 (Hz) [B, S*hop]; amplitudes [B, S+1, K];
    next_weight, fade_weight [hop] (fade_weight for the harmonics in the fade band); out [B, S*hop]."""
    batch, n_block = sines.shape
    hop = next_weight.shape[0]
    segments = n_block // hop
    n_harmonics = amplitudes.shape[2]
    fade_start = (1.0 - fade) * nyquist
    inverse_fade = 1.0 / (fade * nyquist) if fade > 0.0 else 0.0
    # float32 recurrence: 8 lanes per AVX2 register; its error grows like k * 6e-8 (-108 dB at k = 60), while the
    # fundamental's angle itself comes from the float64 phase. The work arrays are made once per call (made per
    # segment, their allocation took longer than the harmonics of a 440 Hz tone).
    sin_1 = np.empty(hop, np.float32)
    cos_1 = np.empty(hop, np.float32)
    sin_k = np.empty(hop, np.float32)
    cos_k = np.empty(hop, np.float32)
    total = np.empty(hop, np.float32)
    for index in range(batch * segments):
        item = index // segments
        segment = index % segments
        base = segment * hop
        total[:] = 0.0
        lowest = 1e30
        highest = 0.0
        for n in range(hop):
            sin_1[n] = sines[item, base + n]
            cos_1[n] = cosines[item, base + n]
            sin_k[n] = sin_1[n]
            cos_k[n] = cos_1[n]
            frequency = abs(f0[item, base + n])
            lowest = min(lowest, frequency)
            highest = max(highest, frequency)
        last = n_harmonics if lowest <= 0.0 else min(n_harmonics, int(math.ceil(nyquist / lowest)))
        safe = last if highest <= 0.0 else min(last, int(math.floor(fade_start / highest)))
        for k in range(1, last + 1):
            start = amplitudes[item, segment, k - 1]
            step = amplitudes[item, segment + 1, k - 1] - start
            if k <= safe:  # one fused pass: accumulate harmonic k, rotate to harmonic k + 1
                for n in range(hop):
                    total[n] += (start + step * next_weight[n]) * sin_k[n]
                    rotated = sin_k[n] * cos_1[n] + cos_k[n] * sin_1[n]
                    cos_k[n] = cos_k[n] * cos_1[n] - sin_k[n] * sin_1[n]
                    sin_k[n] = rotated
            elif fade > 0.0:  # the fade band near Nyquist: per-sample gain, zero at and above Nyquist; fade_weight
                for n in range(hop):
                    # branch-free, so that the loop vectorises (with branches these few harmonics cost more than
                    # all the others of a 440 Hz tone): the position clamped to [0, 1] gives 1 below the band
                    # (to the polynomial's 1e-9) and 0 at and above Nyquist
                    position = min(max((nyquist - k * abs(f0[item, base + n])) * inverse_fade, 0.0), 1.0)
                    gain = np.float32(_raised_cosine(position))
                    total[n] += (start + step * fade_weight[n]) * sin_k[n] * gain
                    rotated = sin_k[n] * cos_1[n] + cos_k[n] * sin_1[n]
                    cos_k[n] = cos_k[n] * cos_1[n] - sin_k[n] * sin_1[n]
                    sin_k[n] = rotated
            else:  # no fade: a hard cut at Nyquist
                for n in range(hop):
                    if k * abs(f0[item, base + n]) < nyquist:
                        total[n] += (start + step * fade_weight[n]) * sin_k[n]
                    rotated = sin_k[n] * cos_1[n] + cos_k[n] * sin_1[n]
                    cos_k[n] = cos_k[n] * cos_1[n] - sin_k[n] * sin_1[n]
                    sin_k[n] = rotated
        for n in range(hop):
            out[item, base + n] = total[n]


@numba.njit(nogil=True, cache=True)
def phase(f0, sample_rate, initial, out):
    """Running phase in cycles, wrapped (float64): out[b, n] = phase before sample n. The sum runs unwrapped
    through blocks of PHASE_BLOCK samples (below 2^6 cycles: float64 keeps 1e-14 of a cycle) and each block is
    wrapped after it, which takes the wrap out of the sum's dependency chain (3x faster)."""
    final = np.empty(f0.shape[0])
    samples = f0.shape[1]
    for item in range(f0.shape[0]):
        value = initial[item]
        for first in range(0, samples, PHASE_BLOCK):
            stop = min(first + PHASE_BLOCK, samples)
            for n in range(first, stop):
                out[item, n] = value
                value += f0[item, n] / sample_rate
            for n in range(first, stop):
                out[item, n] -= math.floor(out[item, n] + 0.5)
            value -= math.floor(value + 0.5)
        final[item] = value
    return final


@numba.njit(nogil=True, fastmath=True, cache=True)
def harmonic_frame_amplitudes(f0, amplitude, distribution, nyquist, fade, out):
    """Per-frame amplitude of every harmonic: ``amplitude`` x the distribution with the harmonics at and above
    Nyquist removed (raised-cosine fade below it) and renormalised to sum 1, as ``normalize_harmonic_distribution``.
    f0 (Hz), amplitude [frames]; distribution, out [frames, K] (float32)."""
    frames, n_harmonics = distribution.shape
    fade_start = (1.0 - fade) * nyquist
    for frame in range(frames):
        total = np.float32(0.0)
        for k in range(n_harmonics):
            frequency = f0[frame] * (k + 1)
            gain = np.float32(1.0)
            if frequency >= nyquist:
                gain = np.float32(0.0)
            elif fade > 0.0 and frequency > fade_start:
                gain = np.float32(0.5 - 0.5 * math.cos(math.pi * (nyquist - frequency) / (fade * nyquist)))
            weight = distribution[frame, k] * gain
            out[frame, k] = weight
            total += weight
        scale = amplitude[frame] / max(total, np.float32(1e-7))
        for k in range(n_harmonics):
            out[frame, k] *= scale


NOISE_TILE = 8  # segments whose convolutions are summed in one work buffer


@numba.njit(nogil=True, fastmath=True, cache=True)
def filtered_noise_add(responses, excitation, first_segment, hop, delay, out):
    """Add filtered noise to ``out`` [N]: segment ``first_segment + j`` (``hop`` samples of ``excitation`` from
    sample (first_segment + j) * hop) through the FIR filter that is the mean of ``responses[j]`` and
    ``responses[j + 1]`` (the filters of the frames either side; the design is linear, so this is the filter of the
    frames' mean magnitudes), whole linear convolutions overlap-added, read ``delay`` samples late (the filters'
    linear-phase delay). ``responses`` [segments + 1, taps / 2 + 1] holds taps 0 .. taps / 2 of each symmetric
    filter (tap ``taps - t`` equals tap ``t``: linear phase).

    Direct convolution, which ``filtered_noise_causal`` computes with FFTs: at 64-sample blocks and 128 taps the
    arithmetic is alike, and this needs no temporaries. The loop runs tap by tap over a tile of segments, so that
    each inner loop adds one scaled block into a buffer that no neighbouring iteration has just written (sample by
    sample, each block shifted by one from the last, the stores stalled the loads: 1.4-1.6x the time). Zero taps, and
    so silent segments, are skipped."""
    segments, half = responses.shape[0] - 1, responses.shape[1] - 1
    taps = 2 * half
    n_out = out.shape[0]
    buffer = np.empty(NOISE_TILE * hop + taps - 1, np.float32)
    for tile in range(0, segments, NOISE_TILE):
        count = min(NOISE_TILE, segments - tile)
        buffer[:] = 0.0
        base = (first_segment + tile) * hop
        for tap in range(taps):
            column = tap if tap <= half else taps - tap
            for index in range(count):
                value = np.float32(0.5) * (responses[tile + index, column] + responses[tile + index + 1, column])
                if value == 0.0:
                    continue
                target = buffer[index * hop + tap:index * hop + tap + hop]
                source = excitation[base + index * hop:base + index * hop + hop]
                for n in range(hop):
                    target[n] += source[n] * value
        first = base - delay
        for n in range(max(0, -first), min(count * hop + taps - 1, n_out - first)):
            out[first + n] += buffer[n]


@numba.njit(nogil=True, cache=True)
def oscillator_angle(f0_frames, position, sample_rate, initial, f0_samples, angle):
    """f0 [F] Hz at the frames -> f0_samples [(F-1)*hop] (linear between frames, ``position`` [hop] the next
    frame's weight) and ``angle`` [(F-1)*hop] float32 radians, 2 pi x the running phase (``initial`` cycles at
    sample 0), summed in float64 as :func:`phase` does and wrapped to [-pi, pi). Returns the phase after the last
    sample (cycles, wrapped)."""
    hop = position.shape[0]
    samples = f0_samples.shape[0]
    for frame in range(f0_frames.shape[0] - 1):
        left = f0_frames[frame]
        step = f0_frames[frame + 1] - left
        for n in range(hop):
            f0_samples[frame * hop + n] = left + step * position[n]
    value = initial
    for first in range(0, samples, PHASE_BLOCK):
        stop = min(first + PHASE_BLOCK, samples)
        running = value
        for n in range(first, stop):
            wrapped = running - math.floor(running + 0.5)
            angle[n] = np.float32(2.0 * math.pi * wrapped)
            running += f0_samples[n] / sample_rate
        value = running - math.floor(running + 0.5)
    return value


@numba.njit(nogil=True, cache=True)
def uniform_noise(key, first_sample, out):
    """``out[i]`` = :func:`mididdsp.dsp.kernels.uniform_noise_reference`'s value at sample ``first_sample + i``
    (the same bits): splitmix64's finaliser of ``key + (sample + 1) * golden``, its top 24 bits as k / 2^23 - 1."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    first = np.uint64(key) + np.uint64(first_sample) * golden
    scale = np.float32(1.0 / (1 << 23))
    for i in range(out.shape[0]):
        z = first + np.uint64(i + 1) * golden
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[i] = np.float32(np.int64(z >> np.uint64(40))) * scale - np.float32(1.0)
