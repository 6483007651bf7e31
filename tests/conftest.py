"""Shared test set-up: the FluidSynth gate.

Tests marked ``@pytest.mark.fluidsynth`` need the ``fluidsynth`` program and the FluidR3_GM SoundFont. Locally
they are skipped when either is missing. With ``MIDIDDSP_REQUIRE_FLUIDSYNTH=1`` (exported by ``.ci/run``) they
fail instead, so CI cannot pass with every FluidSynth test silently skipped.
"""
from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_FLUIDSYNTH_ENV = "MIDIDDSP_REQUIRE_FLUIDSYNTH"


def fluidsynth_missing() -> str | None:
    """Why the FluidSynth tests cannot run here, or None when they can."""
    from mididdsp.datasets.corpus import DEFAULT_SOUNDFONT

    if shutil.which("fluidsynth") is None:
        return "the fluidsynth program is not installed"
    if not os.path.isfile(DEFAULT_SOUNDFONT):
        return f"the SoundFont {DEFAULT_SOUNDFONT} is missing"
    return None


def fluidsynth_required() -> bool:
    return os.environ.get(REQUIRE_FLUIDSYNTH_ENV, "").strip().lower() not in ("", "0", "false", "no")


def check_fluidsynth() -> None:
    """Skip (locally) or fail (with MIDIDDSP_REQUIRE_FLUIDSYNTH set) when FluidSynth cannot run."""
    missing = fluidsynth_missing()
    if missing is None:
        return
    message = f"{missing} (apt-get install fluidsynth fluid-soundfont-gm)"
    if fluidsynth_required():
        pytest.fail(f"{REQUIRE_FLUIDSYNTH_ENV} is set but {message}", pytrace=False)
    pytest.skip(f"needs FluidSynth: {message}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("fluidsynth") is not None:
        check_fluidsynth()
