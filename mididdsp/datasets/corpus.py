"""``mididdsp corpus``: render an expressive SoundFont training corpus with FluidSynth.

For each instrument, melodies (Bach chorale voices, fiddle tunes, generated melodies; see
:mod:`mididdsp.datasets.melodies`) are cut at phrase boundaries, concatenated with rests into recordings of about
20-40 s, played by the rule-based performer (:mod:`mididdsp.datasets.performer`) and rendered by the FluidSynth
program (reverb and chorus off: dry) at 16 kHz, mono, until ``--minutes`` of audio per instrument. Per recording:

    NAME.wav         16 kHz mono, 16-bit PCM, exactly as long as the MIDI file
    NAME.mid         the MIDI actually played (one instrument, channel 0, monophonic)
    NAME.notes.csv   ground truth per note (columns: ``performer.CSV_COLUMNS``)
    NAME.json        the recording's manifest entry, written last: a recording with it is finished and skipped
                     when the command is run again (resumable)

and ``manifest.json`` for the whole corpus. The same seed gives the same files, byte for byte.

Several SoundFonts (``--soundfont A.sf2,B.sf2``): an instrument's recordings take them in turn (recording i is
played by SoundFont ``i mod n``), so each SoundFont gets about ``--minutes / n`` of every instrument, and each
recording's entry names the SoundFont that played it (``soundfont``, its file name). Users' recordings are
unlike any one SoundFont's samples; a model that has heard several generalises better (docs/RESULTS.md).

Measured with FluidR3_GM (tests/test_corpus.py does the same on a trumpet note): the rendered f0 follows the
written vibrato (rate within 0.02 Hz, depth within ~2 cents for trumpet and flute), and CC11 and velocity follow
``40 log10(value / 127)`` dB within 0.1 dB. But some SoundFont samples carry an f0 modulation of their own that
adds to the written vibrato: with no pitch bend, violin shows 12-20 cents (std) at 5-6 Hz, cello 8, flute and
oboe 7, trumpet 2, clarinet 2. The ground truth is what was played (the MIDI), not what the samples add.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mididdsp.errors import MididdspError

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm"
# General MIDI programs (0-based) of the instruments the corpus can play.
INSTRUMENT_PROGRAMS: dict[str, int] = {
    "violin": 40, "viola": 41, "cello": 42, "contrabass": 43, "trumpet": 56, "trombone": 57, "tuba": 58,
    "horn": 60, "saxophone": 65, "oboe": 68, "bassoon": 70, "clarinet": 71, "flute": 73,
}
FLUIDSYNTH_GAIN = 2.0      # FluidSynth master gain (its default, 0.2, is meant for many voices at once)
PEAK_LIMIT = 0.95          # a recording that would peak above this is scaled down (recorded as output_gain)
RECORDING_SECONDS = (20.0, 40.0)
LEAD_IN_S = 0.2
GAP_SECONDS = (0.5, 1.5)   # rest between concatenated melody excerpts
TAIL_S = 1.0               # the file goes on this long after the last note (release)


@dataclass(frozen=True)
class RecordingPlan:
    """What one recording will be: its name, instrument, index within the instrument and target length (s)."""

    name: str
    instrument: str
    index: int
    target_s: float


# ------------------------------------------------------------------------------------------------ FluidSynth
def check_fluidsynth(soundfont: str | Path = DEFAULT_SOUNDFONT) -> tuple[str, Path]:
    """The FluidSynth executable and the SoundFont path; a one-line MididdspError if either is missing."""
    executable = shutil.which("fluidsynth")
    if executable is None:
        raise MididdspError(f"the fluidsynth program was not found; install it with `{INSTALL_HINT}`")
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise MididdspError(f"SoundFont {soundfont} not found; install the default one with `{INSTALL_HINT}` "
                            "or pass --soundfont PATH")
    return executable, soundfont


def render_midi(midi_path: str | Path, soundfont: str | Path = DEFAULT_SOUNDFONT, sample_rate: int | None = None,
                duration_s: float | None = None, gain: float = FLUIDSYNTH_GAIN):
    """Render a MIDI file with the FluidSynth program: numpy float32 [samples], mono (channels averaged), dry.

    The result is cut or zero-padded to ``round(duration_s * sample_rate)`` samples when ``duration_s`` is given
    (FluidSynth's own output runs on past the end of the file by an amount of its choosing).
    """
    import numpy as np

    from mididdsp.dsp.core import SAMPLE_RATE

    sample_rate = SAMPLE_RATE if sample_rate is None else int(sample_rate)
    executable, soundfont = check_fluidsynth(soundfont)
    midi_path = Path(midi_path)
    fd, raw_path = tempfile.mkstemp(prefix=f".{midi_path.stem}.", suffix=".raw", dir=midi_path.parent)
    os.close(fd)
    try:
        command = [executable, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sample_rate),
                   "-o", "synth.cpu-cores=1", "-O", "float", "-T", "raw", "-E", "little", "-F", raw_path,
                   str(soundfont), str(midi_path)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise MididdspError(f"fluidsynth failed on {midi_path}: {message[-1] if message else result.returncode}")
        audio = np.fromfile(raw_path, dtype="<f4").reshape(-1, 2).mean(axis=1).astype(np.float32)
    finally:
        if os.path.exists(raw_path):
            os.remove(raw_path)
    if duration_s is not None:
        n = int(round(duration_s * sample_rate))
        audio = np.pad(audio[:n], (0, max(0, n - audio.shape[0])))
    return audio


# ------------------------------------------------------------------------------------------------ planning
def _rng(seed: int, instrument: str, index: int, stream: int):
    import numpy as np

    return np.random.default_rng([seed, INSTRUMENT_PROGRAMS[instrument], index, stream])


def plan_recordings(instruments: list[str], minutes: float, seed: int) -> list[RecordingPlan]:
    """Recordings of 20-40 s (the last one shorter) until ``minutes`` of audio per instrument. Cheap."""
    plans = []
    for instrument in instruments:
        total, index = 0.0, 0
        while minutes * 60.0 - total > 1e-6:
            if index > 0 and minutes * 60.0 - total < 2.0:  # no sliver of a recording at the end
                break
            target = min(float(_rng(seed, instrument, index, 0).uniform(*RECORDING_SECONDS)), minutes * 60.0 - total)
            plans.append(RecordingPlan(f"{instrument}_{index:04d}", instrument, index, round(target, 3)))
            total += target
            index += 1
    return plans


def perform_recording(plan: RecordingPlan, sources: list[str], seed: int):
    """The recording's performance and the melody excerpts it is made of (manifest ``segments``)."""
    from mididdsp.datasets import melodies, performer

    low, high = melodies.INSTRUMENT_RANGES[plan.instrument]
    rng = _rng(seed, plan.instrument, plan.index, 1)
    parts, segments, t = [], [], LEAD_IN_S
    while plan.target_s - t > 1.0 or not parts:
        melody = melodies.draw_melody(sources, rng, f"generated/{seed}/{plan.name}/{len(parts)}")
        if not melody.notes:
            continue
        melody = melodies.transpose_to_range(melody, low, high, rng)
        phrases = melody.phrases()
        first_phrase = int(rng.integers(len(phrases)))
        room = max(plan.target_s - t, 1.0)
        stop = phrases[first_phrase][1]
        for _, phrase_stop in phrases[first_phrase + 1:]:  # whole phrases while they fit
            if melody.notes[phrase_stop - 1][1] - melody.notes[phrases[first_phrase][0]][0] > room:
                break
            stop = phrase_stop
        first = phrases[first_phrase][0]
        excerpt = melody.excerpt(first, stop)
        if excerpt.duration > room:  # a single phrase longer than the room left: cut it at a note
            keep = max(1, sum(1 for _, end, _ in excerpt.notes if end <= room))
            excerpt = melody.excerpt(first, first + keep)
        parts.append((round(t, 3), excerpt))
        segments.append({"source": melody.source, "melody_id": melody.melody_id,
                         "tempo_qpm": round(melody.tempo_qpm, 3), "offset_s": round(t, 3),
                         "first_note": first, "n_notes": len(excerpt.notes)})
        t += excerpt.duration + float(rng.uniform(*GAP_SECONDS))
    performance = performer.perform(melodies.concatenate(parts, plan.name), INSTRUMENT_PROGRAMS[plan.instrument],
                                    performer.STYLES[plan.instrument], _rng(seed, plan.instrument, plan.index, 2),
                                    tail_s=TAIL_S)
    return performance, segments


def soundfont_for(plan: RecordingPlan, soundfonts: list[str]) -> str:
    """The SoundFont that plays ``plan``: an instrument's recordings take the SoundFonts in turn."""
    return soundfonts[plan.index % len(soundfonts)]


def write_recording(out: Path, plan: RecordingPlan, sources: list[str], seed: int, soundfont: str) -> dict:
    """Perform, render and write one recording's files; returns its manifest entry (also in ``NAME.json``)."""
    import numpy as np
    import soundfile

    from mididdsp.dsp.core import SAMPLE_RATE
    from mididdsp.fileio import atomic_path, write_text_atomic

    performance, segments = perform_recording(plan, sources, seed)
    midi_path = out / f"{plan.name}.mid"
    performance.write_midi(midi_path)
    audio = render_midi(midi_path, soundfont, SAMPLE_RATE, performance.duration)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    output_gain = 1.0 if peak <= PEAK_LIMIT else round(PEAK_LIMIT / peak, 4)
    with atomic_path(out / f"{plan.name}.wav", suffix=".wav") as temp:
        soundfile.write(temp, audio * output_gain, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    performance.write_notes_csv(out / f"{plan.name}.notes.csv")
    entry = {"name": plan.name, "instrument": plan.instrument, "program": INSTRUMENT_PROGRAMS[plan.instrument],
             "audio": f"{plan.name}.wav", "midi": f"{plan.name}.mid", "notes": f"{plan.name}.notes.csv",
             "soundfont": Path(soundfont).name,
             "duration_s": performance.duration, "n_notes": len(performance.notes), "output_gain": output_gain,
             "peak": round(peak * output_gain, 4), "segments": segments}
    write_text_atomic(out / f"{plan.name}.json", json.dumps(entry, indent=1) + "\n")
    return entry


def played_by(entry: dict) -> str:
    """File name of the SoundFont that played a recording's manifest entry (or its ``NAME.json``); entries from
    before SoundFont lists were all played by the default SoundFont."""
    return entry.get("soundfont") or Path(DEFAULT_SOUNDFONT).name


def _finished_entry(out: Path, plan: RecordingPlan, soundfont: str) -> dict | None:
    """The manifest entry of a recording already written completely by ``soundfont``, else None."""
    names = [f"{plan.name}{suffix}" for suffix in (".wav", ".mid", ".notes.csv", ".json")]
    if not all((out / name).is_file() for name in names):
        return None
    try:
        entry = json.loads((out / f"{plan.name}.json").read_text())
    except (OSError, ValueError):
        return None
    return entry if played_by(entry) == Path(soundfont).name else None


def _write_one(job: tuple) -> dict:
    return write_recording(*job)


# ------------------------------------------------------------------------------------------------ corpus
def build_corpus(out: str | Path, instruments: list[str], minutes: float = 2.0, seed: int = 0,
                 soundfont: str | Path | list = DEFAULT_SOUNDFONT, sources: list[str] | None = None, jobs: int = 1,
                 progress: bool = True) -> dict:
    """Render the corpus into ``out`` (see the module docstring) and return the manifest.

    ``soundfont``: one SoundFont path, or a list of them taken in turn per instrument.
    """
    from mididdsp.datasets import melodies, performer
    from mididdsp.dsp.core import SAMPLE_RATE
    from mididdsp.fileio import write_text_atomic

    sources = list(melodies.MELODY_SOURCES if sources is None else sources)
    unknown = [name for name in instruments if name not in INSTRUMENT_PROGRAMS]
    if unknown or not instruments:
        raise MididdspError(f"unknown instrument {', '.join(unknown) or '(none)'}; expected some of "
                            f"{', '.join(INSTRUMENT_PROGRAMS)}")
    bad = [name for name in sources if name not in melodies.MELODY_SOURCES]
    if bad or not sources:
        raise MididdspError(f"unknown melody source {', '.join(bad) or '(none)'}; expected some of "
                            f"{', '.join(melodies.MELODY_SOURCES)}")
    if not minutes > 0:
        raise MididdspError(f"--minutes {minutes}: expected a positive number of minutes per instrument")
    soundfonts = [str(path) for path in (soundfont if isinstance(soundfont, (list, tuple)) else [soundfont])]
    if not soundfonts:
        raise MididdspError("no SoundFont given; expected one or more .sf2 paths")
    for path in soundfonts:
        check_fluidsynth(path)
    if len({Path(path).name for path in soundfonts}) < len(soundfonts):
        raise MididdspError(f"SoundFonts {', '.join(soundfonts)}: two share a file name; the manifest names them by it")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_recordings(list(dict.fromkeys(instruments)), minutes, seed)
    entries = {plan.name: _finished_entry(out, plan, soundfont_for(plan, soundfonts)) for plan in plans}
    todo = [(out, plan, sources, seed, soundfont_for(plan, soundfonts)) for plan in plans
            if entries[plan.name] is None]

    from tqdm import tqdm

    bar = tqdm(total=len(plans), initial=len(plans) - len(todo), unit="recording", disable=not progress)
    if jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for entry in pool.map(_write_one, todo):
                entries[entry["name"]] = entry
                bar.update()
    else:
        for job in todo:
            entry = _write_one(job)
            entries[entry["name"]] = entry
            bar.update()
    bar.close()

    manifest = {
        "format": "mididdsp-soundfont-corpus/1", "sample_rate": SAMPLE_RATE,
        "soundfont": soundfonts[0] if len(soundfonts) == 1 else soundfonts,
        "seed": seed, "minutes_per_instrument": minutes, "melody_sources": sources,
        "fluidsynth": {"gain": FLUIDSYNTH_GAIN, "reverb": False, "chorus": False},
        "pitch_bend_range_semitones": performer.PITCH_BEND_RANGE_SEMITONES,
        "control_step_s": performer.CONTROL_STEP_S, "vibrato_ramp_s": performer.VIBRATO_RAMP_S,
        "cc11_gain_law": "gain_db = 40 * log10(cc11 / 127)", "notes_columns": list(performer.CSV_COLUMNS),
        "recordings": [entries[plan.name] for plan in plans],
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


# ------------------------------------------------------------------------------------------------ command line
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (created; finished recordings are kept)")
    parser.add_argument("--instruments", default="violin,cello,flute,trumpet",
                        help=f"comma-separated, from: {', '.join(INSTRUMENT_PROGRAMS)} (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of audio per instrument (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: 0)")
    parser.add_argument("--soundfont", default=DEFAULT_SOUNDFONT,
                        help="General MIDI SoundFont, or several comma-separated, taken in turn per instrument "
                             "(default: %(default)s)")
    parser.add_argument("--melodies", default="bach,mammoth,generated",
                        help="melody sources, comma-separated: bach, mammoth, generated (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="recordings rendered in parallel (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    split = lambda text: [item.strip() for item in text.split(",") if item.strip()]  # noqa: E731
    manifest = build_corpus(args.out, split(args.instruments), args.minutes, args.seed, split(args.soundfont),
                            split(args.melodies), max(1, args.jobs), progress=not args.no_progress)
    seconds = sum(entry["duration_s"] for entry in manifest["recordings"])
    print(f"{len(manifest['recordings'])} recordings, {seconds / 60.0:.1f} min of audio in {args.out}")
    return 0
