"""The fuzz harnesses (fuzz/): saved crash inputs stay fixed, and a short fuzzing run finds no crash.

``make test`` runs every harness for ``SARAI_FUZZ_SECONDS`` (default 25) each, in
its own process (fuzz/run.py), and fails on any crash, printing the input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ))
import run as fuzz_run  # noqa: E402

REGRESSIONS = sorted((d.name, sorted(p for p in d.iterdir() if p.is_file()))
                     for d in (FUZZ / "regressions").iterdir() if d.is_dir())


@pytest.fixture(autouse=True)
def _atheris():
    pytest.importorskip("atheris", reason="pip install sarai-llama[fuzz]")


@pytest.mark.parametrize("name, files", [r for r in REGRESSIONS if r[1]] or [pytest.param("", [], marks=pytest.mark.skip(
    reason="no saved crash inputs in fuzz/regressions/ yet"))])
def test_saved_crash_inputs_no_longer_crash(name, files):
    run = subprocess.run(fuzz_run.replay_command(name, files), capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, fuzz_run.NOT_AVAILABLE), run.stdout[-3000:] + run.stderr[-3000:]


def test_harness_replays_a_seed(tmp_path):
    """The replay path itself works (a harness that cannot start would hide every regression)."""
    subprocess.run([sys.executable, str(FUZZ / "seeds.py"), str(tmp_path)], check=True, timeout=300)
    seeds = sorted((tmp_path / "grammar").iterdir())
    run = subprocess.run(fuzz_run.replay_command("grammar", seeds), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Executed {seeds[0]}" in run.stderr


@pytest.mark.slow
def test_fuzzers_find_no_crash(tmp_path):
    seconds = os.environ.get("SARAI_FUZZ_SECONDS", "25")
    run = subprocess.run([sys.executable, str(FUZZ / "run.py"), "--seconds", seconds], capture_output=True,
                         text=True, timeout=1800)
    print(run.stdout)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
