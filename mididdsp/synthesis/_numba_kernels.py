"""The compiled bodies of :mod:`mididdsp.synthesis.kernels` (that module imports this one on first use; this one
imports numba). At module level so that numba's on-disk cache serves every process: defined inside a function,
whose functions call each other as closure variables, they missed the cache and compiled again in every process
(1.2-1.5 s of every render)."""
import math

import numba
import numpy as np

from mididdsp.synthesis.kernels import BRACKET, MAX_STEPS, POWER_LIMIT, STEP_TOLERANCE


@numba.njit(nogil=True, cache=True)
def tilted(scaled, beta, weights):
    """weights_k = scaled_k * exp(beta k), k = 1..K, up to one common factor (float64, no overflow)."""
    harmonics = scaled.shape[0]
    if abs(beta) * harmonics < POWER_LIMIT:  # exp(beta)^k stays inside float64's range: products, no exp
        power = 1.0
        ratio = math.exp(beta)
        for k in range(harmonics):
            power *= ratio
            weights[k] = scaled[k] * power
    else:  # a steep tilt (rare): exponents shifted by the largest of the unmasked harmonics (scaled > 0)
        shift = -1e300
        for k in range(harmonics):
            if scaled[k] > 0.0:
                shift = max(shift, math.log(scaled[k]) + beta * (k + 1))
        for k in range(harmonics):
            weights[k] = scaled[k] * math.exp(beta * (k + 1) - shift) if scaled[k] > 0.0 else 0.0


@numba.njit(nogil=True, cache=True)
def lane_powers(beta):
    """exp(beta)^1 .. exp(beta)^4: the four lanes' first powers (the last is also their stride)."""
    ratio = math.exp(beta)
    square = ratio * ratio
    return ratio, square, square * ratio, square * square


@numba.njit(nogil=True, cache=True)
def moments(scaled, beta):
    """(sum w_k, sum k w_k, sum k^2 w_k) of w_k = scaled_k exp(beta k), for K a multiple of 4 and |beta| K under
    POWER_LIMIT. Four lanes (harmonics k, k+1, k+2, k+3), each with its own power of exp(beta) stepping by
    exp(beta)^4 and its own sums: one chain of K products and three of K sums, each step waiting on the last, were
    the solve's critical path (4 lanes: the solve 20 % faster; 8 were slower)."""
    p0, p1, p2, p3 = lane_powers(beta)
    stride = p3
    t0 = t1 = t2 = t3 = f0 = f1 = f2 = f3 = s0 = s1 = s2 = s3 = 0.0
    for start in range(0, scaled.shape[0], 4):
        k = start + 1.0
        w0 = scaled[start] * p0
        w1 = scaled[start + 1] * p1
        w2 = scaled[start + 2] * p2
        w3 = scaled[start + 3] * p3
        t0 += w0
        t1 += w1
        t2 += w2
        t3 += w3
        f0 += w0 * k
        f1 += w1 * (k + 1.0)
        f2 += w2 * (k + 2.0)
        f3 += w3 * (k + 3.0)
        s0 += w0 * k * k
        s1 += w1 * (k + 1.0) * (k + 1.0)
        s2 += w2 * (k + 2.0) * (k + 2.0)
        s3 += w3 * (k + 3.0) * (k + 3.0)
        p0 *= stride
        p1 *= stride
        p2 *= stride
        p3 *= stride
    return (t0 + t1) + (t2 + t3), (f0 + f1) + (f2 + f3), (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def lane_weights(scaled, beta, weights):
    """:func:`tilted` for K a multiple of 4 and |beta| K under POWER_LIMIT, in :func:`moments`' four lanes."""
    p0, p1, p2, p3 = lane_powers(beta)
    stride = p3
    for start in range(0, scaled.shape[0], 4):
        weights[start] = scaled[start] * p0
        weights[start + 1] = scaled[start + 1] * p1
        weights[start + 2] = scaled[start + 2] * p2
        weights[start + 3] = scaled[start + 3] * p3
        p0 *= stride
        p1 *= stride
        p2 *= stride
        p3 *= stride


@numba.njit(nogil=True, cache=True)
def solve(scaled, target, beta, weights, out):
    """One frame: ``scaled`` [K'] = exp(logit - a constant) (0: masked; zeros beyond the K harmonics of ``out``),
    ``target`` centroid, ``beta`` the start; writes the distribution to ``out`` [K] (float32) and returns the
    solved beta. ``weights`` [K']: scratch."""
    harmonics = scaled.shape[0]
    lanes = harmonics % 4 == 0
    low, high = -BRACKET, BRACKET
    beta = min(max(beta, low), high)
    for _ in range(MAX_STEPS):
        if lanes and abs(beta) * harmonics < POWER_LIMIT:
            total, first, second = moments(scaled, beta)
        else:
            tilted(scaled, beta, weights)
            total = first = second = 0.0
            for k in range(harmonics):
                total += weights[k]
                first += weights[k] * (k + 1)
                second += weights[k] * (k + 1) * (k + 1)
        mean = first / total
        variance = second / total - mean * mean
        if mean > target:
            high = beta
        else:
            low = beta
        step = beta - (mean - target) / variance if variance > 1e-300 else low - 1.0
        if not (low < step < high):  # outside the shrinking bracket: bisect instead
            step = 0.5 * (low + high)
        change = abs(step - beta)
        beta = step
        if change < STEP_TOLERANCE:
            break
    if lanes and abs(beta) * harmonics < POWER_LIMIT:
        lane_weights(scaled, beta, weights)
    else:
        tilted(scaled, beta, weights)
    total = 0.0
    for k in range(harmonics):
        total += weights[k]
    for k in range(out.shape[0]):
        out[k] = np.float32(weights[k] / total)
    return beta


@numba.njit(nogil=True, cache=True)
def tilt(logits, centroid, out):
    """logits [F, K] float32 (masked at -1e4), centroid [F] -> out [F, K] float32 distributions."""
    frames, harmonics = logits.shape
    scaled = np.zeros(-(-harmonics // 4) * 4)  # zeros beyond K: the solve's four lanes
    weights = np.empty(scaled.shape[0])
    beta = 0.0  # each frame starts from the previous frame's solution: neighbours differ little
    for f in range(frames):
        top = logits[f, 0]
        for k in range(harmonics):
            top = max(top, logits[f, k])
        for k in range(harmonics):
            scaled[k] = math.exp(np.float32(logits[f, k] - top))
        beta = solve(scaled, float(centroid[f]), beta, weights, out[f])
    return out


@numba.njit(nogil=True, cache=True)
def tilt_kept(scaled, highest, centroid, out):
    """scaled [F, K] float32 = exp(logit - a constant), highest [F] (harmonics kept: the first ``highest``; the
    rest weigh 0), centroid [F] -> out [F, K] float32."""
    frames, harmonics = scaled.shape
    row = np.zeros(-(-harmonics // 4) * 4)  # zeros beyond K: the solve's four lanes
    weights = np.empty(row.shape[0])
    beta = 0.0
    for f in range(frames):
        kept = min(max(int(highest[f]), 1), harmonics)
        for k in range(kept):
            row[k] = scaled[f, k]
        for k in range(kept, harmonics):
            row[k] = 0.0
        beta = solve(row, float(centroid[f]), beta, weights, out[f])
    return out


@numba.njit(nogil=True, cache=True)
def kept_harmonics(f0, n_harmonics, limit):
    """The number of k in 1..n_harmonics with float32 ``f0 * k < limit`` (both float32), at least 1."""
    count = 0
    for k in range(1, n_harmonics + 1):
        if f0 * np.float32(k) < limit:
            count += 1
    return max(count, 1)


@numba.njit(nogil=True, cache=True)
def nyquist_count(f0, n_harmonics, limit, out):
    """f0 [F] float32 (Hz), limit float32 -> out [F]: :func:`kept_harmonics` of each frame."""
    for f in range(f0.shape[0]):
        out[f] = kept_harmonics(f0[f], n_harmonics, limit)
    return out


@numba.njit(nogil=True, fastmath=True, cache=True)
def layer_norm_leaky(hidden, weight, bias, eps, slope, out, then_add):
    """out = leaky_relu(layer_norm(hidden) * weight + bias, slope) per row, and then ``then_add`` added to
    ``hidden``'s row (the next convolution's bias, into its residual): hidden, out [T, C] float32; weight, bias,
    then_add [C]. One pass over each row in cache (torch: a norm pass, an activation pass and an add over [T, C])."""
    frames, channels = hidden.shape
    for t in range(frames):
        total = np.float32(0.0)
        for c in range(channels):
            total += hidden[t, c]
        mean = total / channels
        spread = np.float32(0.0)
        for c in range(channels):
            centred = hidden[t, c] - mean
            spread += centred * centred
        scale = np.float32(1.0) / np.sqrt(spread / channels + eps)
        for c in range(channels):
            value = (hidden[t, c] - mean) * scale * weight[c] + bias[c]
            out[t, c] = value if value >= 0.0 else value * slope
        for c in range(channels):
            hidden[t, c] += then_add[c]
    return out


@numba.njit(nogil=True, cache=True)
def _note_means(values, weights, note, n_notes):
    """Per-note weighted mean of [T] ``values`` (``weights`` [T], 0 outside), as ``FrameLayout.note_mean``:
    the weighted sum over the weights' sum floored at 1e-6 (0 for a note without weighted frames)."""
    total = np.zeros(n_notes)
    count = np.zeros(n_notes)
    for t in range(values.shape[0]):
        index = max(note[t], 0)
        total[index] += values[t] * weights[t]
        count[index] += weights[t]
    for n in range(n_notes):
        total[n] /= max(count[n], 1e-6)
    return total


@numba.njit(nogil=True, cache=True)
def _released(level, note, active, since_onset, since_end, first, stop, per_frame, silence_db):
    """``SynthesisGenerator._release`` in place on [T] ``level``: rest frames take the level of their note's last
    frame, falling ``per_frame`` dB per frame, floored at ``silence_db``."""
    end_level = np.full(first.shape[0], silence_db)
    for t in range(level.shape[0]):
        index = max(note[t], 0)
        if active[t] and since_onset[t] + 1 + first[index] == stop[index]:
            end_level[index] = max(end_level[index], level[t])
    for t in range(level.shape[0]):
        if not active[t]:
            level[t] = max(end_level[max(note[t], 0)] - per_frame * (since_end[t] + 1), silence_db)


@numba.njit(nogil=True, cache=True)
def _box_average(signal, width):
    """Centred moving average over ``width`` frames, edges held (replicate padding of width // 2 before and
    width - 1 - width // 2 after), as the generator's ``_moving_average``: a running sum in float64."""
    frames = signal.shape[0]
    before = width // 2
    out = np.empty(frames)
    running = 0.0
    for j in range(width):
        running += signal[min(max(j - before, 0), frames - 1)]
    for t in range(frames):
        out[t] = running / width
        running += signal[min(max(t + width - before, 0), frames - 1)] - signal[min(max(t - before, 0), frames - 1)]
    return out


@numba.njit(nogil=True, cache=True)
def frame_controls(raw, note, active, since_onset, length, since_end, first, stop, physical, pitch, previous_pitch,
                   gap, next_pitch, next_gap, phases, settings, f0_out, level_out, noise_out, spread_out,
                   centroid_out, highest_out):
    """The generator's per-frame controls after its network, for one voice of T frames and N notes (see
    ``SynthesisGenerator.forward``, which this equals to float rounding; float64 inside, float32 out).

    raw [T, >= 6] float32 (the heads); note, since_onset, length, since_end [T] int64 and active [T] bool (the
    layout); first, stop [N] int64; physical [N, 7] float32 (dB, dB, fraction, cents, harmonic, dB, Hz); pitch,
    previous_pitch, gap, next_pitch, next_gap, phases [N]; settings [19] float64, the generator's constants in the
    order ``mididdsp.synthesis.settings.kernel_settings`` lists them. Writes f0 (Hz), the level (dB, silence before the
    first note), the noise level (dB), the noise bands' spread (0..1), the centroid and the Nyquist count of
    harmonics (:func:`kept_harmonics`), each [T] float32."""
    learned_shape, level_noise, shape_db, max_deviation = settings[0] > 0, settings[1] > 0, settings[2], settings[3]
    n_harmonics, limit_hz, per_frame = int(settings[4]), settings[5], settings[6]
    silence_db, db_floor = settings[7], settings[8]
    ripple, rate_range, edge_frames, attack_frames = settings[9], settings[10], settings[11], settings[12]
    noise_relative_db, smoothing, frame_rate = settings[13], int(settings[14]), settings[15]
    glide_frames, legato_gap_s, vibrato_fade_s = settings[16], settings[17], settings[18]
    frames = raw.shape[0]
    n_notes = first.shape[0]
    weight = np.empty(frames)
    for t in range(frames):
        weight[t] = 1.0 if active[t] else 0.0

    # level: the note's contour peaking where asked, edge dips, standardised per note, then the release
    shape = np.empty(frames)
    if learned_shape:
        cumulative = np.empty(frames)
        running = 0.0
        for t in range(frames):
            running += math.exp(rate_range * math.tanh(raw[t, 1] / rate_range))
            cumulative[t] = running
        depth = np.zeros(n_notes)
        for t in range(frames):
            index = max(note[t], 0)
            at = t + float(physical[index, 2]) * length[t] - since_onset[t]
            at = min(max(at, 0.0), frames - 1.0)
            low = int(math.floor(at))
            high = min(low + 1, frames - 1)
            fraction = at - low
            at_peak = cumulative[low] * (1.0 - fraction) + cumulative[high] * fraction
            distance = abs(cumulative[t] - at_peak) if active[t] else 0.0
            shape[t] = distance
            depth[index] = max(depth[index], distance)
        for t in range(frames):
            shape[t] = -shape[t] / max(depth[max(note[t], 0)], 1e-6)
    else:
        for t in range(frames):
            peak = float(physical[max(note[t], 0), 2])
            position = since_onset[t] / length[t]
            shape[t] = -abs(position - peak) / max(max(peak, 1.0 - peak), 1e-3) + ripple * math.tanh(raw[t, 1])
    for t in range(frames):
        to_end = max(length[t] - 1 - since_onset[t], 0)
        edges = math.exp(-since_onset[t] / edge_frames) + math.exp(-to_end / edge_frames)
        shape[t] -= 4.0 / (1.0 + math.exp(-raw[t, 0])) * edges
    mean = _note_means(shape, weight, note, n_notes)
    spread_sum = np.empty(frames)
    for t in range(frames):
        spread_sum[t] = (shape[t] - mean[max(note[t], 0)]) ** 2
    variance = _note_means(spread_sum, weight, note, n_notes)
    level = np.empty(frames)
    for t in range(frames):
        index = max(note[t], 0)
        level[t] = (physical[index, 0] + physical[index, 1] * (shape[t] - mean[index])
                    / math.sqrt(variance[index] + 1e-8))
    _released(level, note, active, since_onset, since_end, first, stop, per_frame, silence_db)

    # noise level: learned (under the level, or absolute), the attack's asked mean over its first frames
    noise = np.empty(frames)
    attack = np.empty(frames)
    for t in range(frames):
        attack[t] = 1.0 if active[t] and since_onset[t] < attack_frames else 0.0
        if level_noise:
            noise[t] = level[t] - noise_relative_db / (1.0 + math.exp(-raw[t, 3]))
        else:
            noise[t] = -45.0 + 25.0 * math.tanh(raw[t, 3] / 2.0)
    attack_mean = _note_means(noise, attack, note, n_notes)
    for t in range(frames):
        index = max(note[t], 0)
        decay = math.exp(-max(since_onset[t] - attack_frames, 0) / attack_frames)
        if level_noise:
            noise[t] = physical[index, 5] * decay + noise[t] * (1.0 - decay)
        else:
            noise[t] = noise[t] + (physical[index, 5] - attack_mean[index]) * decay
    _released(noise, note, active, since_onset, since_end, first, stop, per_frame, silence_db)
    for t in range(frames):
        spread = min(max((noise[t] - db_floor) / shape_db, 0.0), 1.0)
        if level_noise and attack[t] == 0.0:
            spread = 1.0 if active[t] else min(max((noise[t] - silence_db) / shape_db, 0.0), 1.0)
        spread_out[t] = spread
        noise_out[t] = noise[t]

    # f0: the written pitch, legato glides centred on the onsets, the slow drift and onset scoop, vibrato
    deviation = np.empty(frames)
    contour = np.empty(frames)
    for t in range(frames):
        deviation[t] = max_deviation * math.tanh(raw[t, 4])
        contour[t] = math.tanh(raw[t, 2])
    deviation = _box_average(_box_average(deviation, smoothing), smoothing)
    deviation_mean = _note_means(deviation, weight, note, n_notes)
    contour_mean = _note_means(contour, weight, note, n_notes)
    onset_value = np.zeros(n_notes)
    for t in range(frames):
        if active[t] and since_onset[t] == 0:
            onset_value[max(note[t], 0)] += raw[t, 5]
    half = int(glide_frames) // 2
    for t in range(frames):
        index = max(note[t], 0)
        started = note[t] >= 0
        value = float(pitch[index])
        glide = 0.0
        if note[t] > 0 and gap[index] < legato_gap_s and since_onset[t] < half and active[t]:
            glide = (previous_pitch[index] - value) * 0.5 * (1.0 + math.cos(math.pi * (since_onset[t] + half)
                                                                              / glide_frames))
        to_next = first[min(index + 1, n_notes - 1)] - (since_onset[t] + first[index])
        if active[t] and next_gap[index] < legato_gap_s and 0 < to_next <= half:
            glide += (next_pitch[index] - value) * 0.5 * (1.0 - math.cos(math.pi * (half - to_next) / glide_frames))
        cents = deviation[t] - deviation_mean[index]
        if active[t]:
            cents += (max_deviation * math.tanh(onset_value[index]) * math.exp(-since_onset[t] / 3.0))
        if started:
            seconds = since_onset[t] / frame_rate
            fade = 0.5 - 0.5 * math.cos(math.pi * min(max(seconds / vibrato_fade_s, 0.0), 1.0))
            rate = min(max(float(physical[index, 6]), 0.0), 15.0)
            cents += physical[index, 3] * fade * math.sin(2.0 * math.pi * rate * seconds + phases[index])
        f0 = np.float32(440.0 * 2.0 ** ((value + glide + cents / 100.0 - 69.0) / 12.0))
        f0_out[t] = f0
        highest = kept_harmonics(f0, n_harmonics, np.float32(limit_hz))
        highest_out[t] = highest
        centroid_out[t] = min(max(physical[index, 4] + contour[t] - contour_mean[index], 1.0), float(highest))
        level_out[t] = level[t] if started else silence_db


@numba.njit(nogil=True, cache=True)
def frame_positions(first, stop, end, start_frame, note, active, since_onset, length, since_end):
    """Frames ``start_frame ..`` (as many as ``note`` holds) against one voice's notes, as ``generator.frame_layout``
    (first, stop, end [N] int64 in time order, padding notes last and "never"): writes note (the last note starting
    at or before the frame, -1 before the first), active, since_onset, length (of that note, at least 1) and
    since_end (frames since it stopped, in rests), each [T]."""
    n_notes = first.shape[0]
    current = -1
    for t in range(note.shape[0]):
        frame = start_frame + t
        while current + 1 < n_notes and first[current + 1] <= frame:
            current += 1
        index = max(current, 0)
        started = current >= 0
        note[t] = current
        active[t] = started and frame < stop[index]
        since_onset[t] = frame - first[index] if started else 0
        length[t] = max(end[index] - first[index], 1)
        since_end[t] = frame - stop[index] if started and not active[t] else 0


@numba.njit(nogil=True, cache=True)
def frame_features(per_note, scaled, note, active, since_onset, length, since_end, frame_rate, out):
    """``SynthesisGenerator.features`` of one voice: per_note [N, 6] and scaled [N, 5] (the note columns and the
    expression, float32), the layout [T] -> out [T, 18] float32 (timing, note, expression columns)."""
    two = np.float32(2.0)
    for t in range(note.shape[0]):
        index = max(note[t], 0)
        on = np.float32(1.0) if active[t] else np.float32(0.0)
        started = np.float32(1.0) if note[t] >= 0 else np.float32(0.0)
        seconds = np.float32(since_onset[t]) / np.float32(frame_rate)
        span = np.float32(length[t])
        position = np.float32(since_onset[t]) / span
        remaining = (span - np.float32(since_onset[t])) / np.float32(frame_rate)
        out[t, 0] = on
        out[t, 1] = started
        out[t, 2] = min(max(position, np.float32(0.0)), two) * on
        out[t, 3] = min(max(seconds, np.float32(0.0)), two) / two * on
        out[t, 4] = min(max(remaining, np.float32(0.0)), two) / two * on
        out[t, 5] = min(max(np.float32(since_end[t]) / np.float32(frame_rate), np.float32(0.0)), two) / two
        out[t, 6] = np.float32(math.exp(-seconds / np.float32(0.05))) * on
        for c in range(6):
            out[t, 7 + c] = per_note[index, c]
        for c in range(5):
            out[t, 13 + c] = scaled[index, c] * started
