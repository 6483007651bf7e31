"""Teacher targets for the MIDI models, computed once per (prepared folder, synthesis coder) and cached.

For every recording with notes, the synthesis coder (the model ``mididdsp extract`` uses) turns the audio into
frame controls on the refined f0 (:func:`mididdsp.pitch.refine_f0`), their level corrected in closed loop
(``LOUDNESS_PASSES`` of :meth:`mididdsp.dsp.DDSPSynth.correct_loudness`, as `mididdsp resynth` does) so that the
controls render the recording's loudness at onsets and releases too and the generator learns attacks as sharp
as the recording's rather than smoothed twice by the analysis window; and every note's expression is computed
from them with :func:`mididdsp.expression.controls.note_expression` and the coder's calibrated ranges (the
extractor's formulas and scales on these controls). So the synthesis generator learns to hit the controls the
extractor reads, and the expression prior learns tables like the ones the extractor makes.

    PREPARED/teacher/<key>/<shard name>.npz     one per recording (key: a hash of the recipe and the coder's files)
      f0_hz                   float32 [T]        refined f0, Hz
      amplitude               float32 [T]        linear
      harmonic_distribution   float16 [T, K]     sums to 1 per frame (float16: 40 % of the disk, 1e-3 relative)
      noise_magnitudes        float32 [T, M]     linear
      notes                   float64 [N, 4]     start_s, end_s, pitch, velocity (the shard's monophonic notes)
      controls                float32 [N, 6]     scaled, :data:`~mididdsp.expression.controls.CONTROL_NAMES`
      physical                float32 [N, 7]     :data:`~mididdsp.expression.controls.PHYSICAL_NAMES`
      level_offset_db         float32 [N]        the recording's level offset (``controls`` and ``physical`` hold
                                                 volume and attack noise relative to it, as ``extract`` writes)
      present                 bool    [N]        the note has frames
    PREPARED/teacher/<key>/teacher.json          the coder, its ranges and instruments

Building is resumable: finished recordings are skipped, each file is written atomically.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


from mididdsp.errors import MididdspError

TEACHER_DIR = "teacher"
PHYSICAL_RATE_COLUMN = 4  # vibrato_rate_hz in PHYSICAL_NAMES
# A note the coder gives no level (its amplitude at the -80 dB floor, 0.4-4 % of the corpus's notes per instrument)
# was not read, not played silently: a prior that learned it would drop notes from renders.
UNREAD_VOLUME_DB = -70.0
INFO_FILE = "teacher.json"
LOUDNESS_PASSES = 2
RECIPE = b"teacher 4: loudness-corrected controls, +6 / -3 dB; levels relative to the recording"  # part of the cache key: a changed recipe gets a new cache


def teacher_key(model_dir: str | Path) -> str:
    """10 hex digits identifying the recipe and a model directory's weights and config (a retrained coder, or a
    changed recipe, gets a new cache)."""
    digest = hashlib.sha1(RECIPE)
    for name in ("config.yaml", "weights.pt"):
        path = Path(model_dir) / name
        if not path.is_file():
            raise MididdspError(f"{model_dir}: not a model directory ({name} is missing)")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def teacher_dir(data_dir: str | Path, model_dir: str | Path) -> Path:
    return Path(data_dir) / TEACHER_DIR / teacher_key(model_dir)


def build_teacher(data_dir: str | Path, model_dir: str | Path, progress: bool = True) -> Path:
    """Compute (or complete) the teacher cache of ``data_dir`` with the coder ``model_dir``; returns its folder."""
    import numpy as np

    import torch
    from tqdm import tqdm

    from mididdsp.datasets.shards import shard_name
    from mididdsp.datasets.torch_data import RecordingDataset
    from mididdsp.expression.controls import (CONTROL_NAMES, LEVEL_OFFSET, PHYSICAL_NAMES, level_offset,
                                              note_expression, reference_level, relative_levels)
    from mididdsp.expression.extract import model_controls, model_ranges
    from mididdsp.fileio import atomic_path, write_text_atomic
    from mididdsp.models import load_model, model_metadata
    from mididdsp.pitch import refine_f0

    out = teacher_dir(data_dir, model_dir)
    model = load_model(model_dir)
    known = model_metadata(model).get("instruments") or {}
    ranges = model_ranges(model)
    references = model_metadata(model).get("reference_levels_db")
    dataset = RecordingDataset(data_dir, split=None)
    todo = [i for i, r in enumerate(dataset.recordings) if r["has_notes"] and r["instrument"] in known]
    if not todo:
        raise MididdspError(f"{data_dir}: no recordings with notes of the coder's instruments ({', '.join(known)})")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / INFO_FILE, json.dumps({"model": str(Path(model_dir).resolve()), "instruments": known,
                                                   "expression_ranges": ranges}, indent=1))
    for index in tqdm(todo, desc="teacher", unit="recording", disable=not progress, file=sys.stderr):
        recording = dataset.recordings[index]
        path = out / shard_name(recording["id"])
        if path.is_file():
            continue
        item = dataset[index]
        f0_hz = refine_f0(item["audio"], item["f0_hz"])
        instrument = int(known[recording["instrument"]])
        controls = model_controls(model, item["audio"], f0_hz, item["loudness_db"], instrument)
        controls = model.synth.correct_loudness(controls, item["loudness_db"][None], item["audio"].shape[-1],
                                                torch.tensor([instrument]), passes=LOUDNESS_PASSES)
        notes = item["notes"].numpy()
        with torch.no_grad():
            values = note_expression({k: v[0] for k, v in controls.items()}, item["note_index"],
                                     torch.from_numpy(notes[:, 2]).float(), len(notes), ranges=ranges)
            reference = reference_level(ranges, references, recording["instrument"])
            values = relative_levels(values, level_offset(values["volume_db"], values["present"], reference), ranges)
        arrays = {
            "f0_hz": controls["f0_hz"][0].numpy().astype(np.float32),
            "amplitude": controls["amplitude"][0].numpy().astype(np.float32),
            "harmonic_distribution": controls["harmonic_distribution"][0].numpy().astype(np.float16),
            "noise_magnitudes": controls["noise_magnitudes"][0].numpy().astype(np.float32),
            "notes": notes.astype(np.float64),
            "controls": np.stack([values[n].numpy() for n in CONTROL_NAMES], -1).astype(np.float32),
            "physical": np.stack([values[n].numpy() for n in PHYSICAL_NAMES], -1).astype(np.float32),
            LEVEL_OFFSET: values[LEVEL_OFFSET].numpy().astype(np.float32),
            "present": values["present"].numpy().astype(bool),
        }
        with atomic_path(path, suffix=".npz") as temp:
            np.savez(temp, **arrays)
    return out


def ensure_teacher(data_dir: str | Path, model_dir: str | Path | None = None) -> Path:
    """The teacher cache of ``data_dir`` for ``model_dir`` (default: the shipped synthesis coder), built (or
    completed, after a kill) when it lacks a recording with notes of the coder's instruments; returns its folder.
    Training and evaluation call this, so ``mididdsp train synthesis_generator data.dir=PREPARED`` works without a
    separate ``mididdsp teacher``."""
    from mididdsp.datasets.shards import load_manifest, shard_name
    from mididdsp.models import read_model_config
    from mididdsp.resynth import SHIPPED_CODER

    model_dir = Path(model_dir) if model_dir else SHIPPED_CODER

    folder = teacher_dir(data_dir, model_dir)
    known = read_model_config(model_dir).get("instruments") or {}
    wanted = [r for r in load_manifest(data_dir)["recordings"] if r.get("has_notes", True) and r["instrument"] in known]
    if (folder / INFO_FILE).is_file() and all((folder / shard_name(r["id"])).is_file() for r in wanted):
        return folder
    print(f"computing the teacher targets of {data_dir} with {model_dir} (once per data set and coder)",
          file=sys.stderr, flush=True)
    return build_teacher(data_dir, model_dir, progress=sys.stderr.isatty())


def load_teacher(folder: str | Path, recording_id: str) -> dict[str, np.ndarray]:
    """The cached arrays of one recording (memory-mapped where possible is not needed: files are small)."""
    import numpy as np

    from mididdsp.datasets.shards import shard_name

    path = Path(folder) / shard_name(recording_id)
    if not path.is_file():
        raise MididdspError(f"{path}: no teacher targets for recording {recording_id!r} (build them first)")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def teacher_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise MididdspError(f"{folder}: not a teacher cache ({INFO_FILE} is missing)")
    return json.loads(path.read_text())


def note_tables(data_dir: str | Path, folder: str | Path, split: str | None) -> list[dict]:
    """Per recording of ``split`` (None: all) that has teacher targets: ``{"id", "instrument" (name),
    "notes" [N, 4] float64 (start_s, end_s, pitch, velocity), "controls" [N, 6] float32 (scaled),
    "physical" [N, 7] float32, "present" [N] bool}``, in manifest order."""
    from mididdsp.datasets.shards import load_manifest, shard_name

    tables = []
    for recording in load_manifest(data_dir)["recordings"]:
        if split is not None and recording["split"] != split:
            continue
        if not (Path(folder) / shard_name(recording["id"])).is_file():
            continue
        arrays = load_teacher(folder, recording["id"])
        tables.append({"id": recording["id"], "instrument": recording["instrument"], "notes": arrays["notes"],
                       "controls": arrays["controls"], "physical": arrays["physical"], "present": arrays["present"],
                       "level_offset_db": arrays["level_offset_db"]})
    return tables


# --- command line ------------------------------------------------------------------------------------------------
def configure_parser(parser) -> None:
    parser.add_argument("data", help="prepared folder (mididdsp prepare) whose recordings have notes")
    parser.add_argument("--model", default=None,
                        help="synthesis coder whose controls are the targets (default: the shipped one)")


def run(args) -> int:
    from mididdsp.resynth import SHIPPED_CODER

    folder = build_teacher(args.data, Path(args.model) if args.model else SHIPPED_CODER, progress=sys.stderr.isatty())
    count = len(list(folder.glob("*.npz")))
    print(f"teacher targets of {count} recordings in {folder}")
    return 0


def note_targets(arrays: dict, with_offset: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A recording's teacher notes -> (``targets`` [N, 7] float32: the six scaled controls and the vibrato rate
    in Hz, the order of a prior's expression input, and with ``with_offset`` an eighth column, the recording's
    ``level_offset_db``: a generator's input; ``present`` [N] bool: the note has frames, finite values and a level
    the coder read, above ``UNREAD_VOLUME_DB``). Absent notes read 0."""
    import numpy as np

    rate = PHYSICAL_RATE_COLUMN
    offset = arrays["level_offset_db"].astype(np.float32)[:, None]
    targets = np.concatenate([arrays["controls"], arrays["physical"][:, rate:rate + 1]]
                             + ([offset] if with_offset else []), axis=1)
    present = (arrays["present"].astype(bool) & np.isfinite(targets).all(axis=1)
               & (arrays["physical"][:, 0] + offset[:, 0] > UNREAD_VOLUME_DB))
    return np.where(present[:, None], targets, 0.0).astype(np.float32), present


def table_arrays(table: dict, instruments: dict[str, int]) -> dict[str, np.ndarray]:
    """One recording's note table (from :func:`note_tables`) -> ``notes`` [N, 4] float32, ``targets`` [N, 7]
    float32 and ``present`` [N] bool (:func:`note_targets`), ``instrument`` (id)."""
    import numpy as np

    targets, present = note_targets(table)
    return {"notes": np.asarray(table["notes"], dtype=np.float32), "targets": targets, "present": present,
            "instrument": int(instruments[table["instrument"]])}
