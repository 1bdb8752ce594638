"""The native build's OpenBLAS option: both sources build, BLAS is really used, results agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sarai_llama

from conftest import build_into_site, write_tiny_llama

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

LOGITS = (
    "import json, sys, sarai_llama as s\n"
    "llm = s.Llama(sys.argv[1], n_ctx=256, n_batch=256, n_threads=2, verbose=False)\n"
    "llm.eval(llm.tokenize(b'the a is of and ' * 12))\n"
    "print(json.dumps({'logits': llm.eval_logits[-1], 'info': s.system_info(),"
    " 'blas': s.build_info()['blas']}))\n"
)


def build_blas(tmp: Path, blas: str) -> Path:
    """A native wheel with ``blas`` in a private site directory (its own persistent build dir)."""
    _wheel, site = build_into_site(ROOT, tmp, "native=true", f"blas={blas}",
                                   f"build-dir=build/{{wheel_tag}}-native-blas-{blas}")
    return site


def logits_with(site: Path | None, model: Path) -> dict:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    run = subprocess.run([sys.executable, "-c", LOGITS, str(model)], capture_output=True, text=True, env=env, cwd="/")
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("f16") / "tiny-f16.gguf", n_embd=256, n_ff=512, n_head=4, f16=True)


@pytest.mark.parametrize("blas", ["system", "vendored"])
def test_openblas_build_is_used_and_agrees(tmp_path, f16_model, blas):
    if blas == "system" and subprocess.run(["pkg-config", "--exists", "openblas"]).returncode != 0:
        pytest.skip("no system OpenBLAS (apt-get install libopenblas-dev pkg-config)")
    if sarai_llama.build_info()["blas"] is not None:
        pytest.skip("the reference (installed) build must be one without BLAS")
    site = build_blas(tmp_path, blas)
    with_blas = logits_with(site, f16_model)
    assert "BLAS" in with_blas["info"]["backends"]
    assert with_blas["blas"]["vendor"] == "OpenBLAS" and with_blas["blas"]["source"] == blas
    assert with_blas["blas"]["version"].startswith("0.3.")
    if blas == "vendored":
        assert with_blas["blas"]["threading"] == "openmp"
    without = logits_with(None, f16_model)
    assert "BLAS" not in without["info"]["backends"]
    a, b = np.array(with_blas["logits"]), np.array(without["logits"])
    assert a.shape == b.shape
    assert np.allclose(a, b, rtol=1e-2, atol=5e-2), float(np.abs(a - b).max())
    assert int(a.argmax()) == int(b.argmax())
