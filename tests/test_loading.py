"""sarai_llama.loading: no model file kills the process (issue 15).

Files that make llama.cpp abort are loaded first by a probe process; these tests
run the real probe on real hostile files. Where a wrong outcome would abort the
test process itself, the load runs in a child interpreter and its fate is checked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import write_tiny_llama

from sarai_llama import Llama, ModelLoadError, loading


def _load_in_child(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = ("import sys, sarai_llama as s\n"
            "try:\n    s.Llama(sys.argv[1], verbose=False, n_threads=1)\n    print('loaded')\n"
            "except s.ModelLoadError as e:\n    print('ModelLoadError', e)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def too_many_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="pip install sarai-llama[test]")
    return write_tiny_llama(tmp_path_factory.mktemp("hostile") / "layers-100000.gguf", block_count=100000)


def test_block_count_100000_is_a_model_load_error_with_llamas_message(too_many_layers):
    """It used to SIGABRT the interpreter: llama.cpp asserts n_layer_all <= LLAMA_MAX_LAYERS."""
    run = _load_in_child(too_many_layers)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ModelLoadError"), run.stdout
    assert "SIGABRT" in run.stdout and "n_layer_all" in run.stdout and "LLAMA_MAX_LAYERS" in run.stdout


def test_every_load_path_is_probed(too_many_layers):
    """load_model is what Llama, the server, bench and tune call; here in this very process."""
    with pytest.raises(ModelLoadError, match="GGML_ASSERT"):
        loading.load_model(too_many_layers)
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "bench", str(too_many_layers), "-p", "8", "-n", "2",
                          "-r", "1"], capture_output=True, text=True, cwd="/", timeout=300)
    assert run.returncode == 2 and "n_layer_all" in run.stderr, run.stderr[-2000:]


def test_trusted_skips_the_probe(too_many_layers):
    """The switch is real: a trusted hostile file reaches llama.cpp in-process (and aborts it)."""
    run = _load_in_child(too_many_layers, {loading.TRUSTED_ENV: "1", "GGML_NO_BACKTRACE": "1"})
    assert run.returncode == -signal.SIGABRT, (run.returncode, run.stdout, run.stderr[-500:])
    assert loading.is_trusted(None) is (os.environ.get(loading.TRUSTED_ENV) == "1")
    assert loading.is_trusted(True) and not loading.is_trusted(False)


def test_a_file_that_passed_is_not_probed_again(tmp_path):
    path = write_tiny_llama(tmp_path / "ok.gguf")
    key = loading._key(path, False)
    assert key not in loading._passed
    Llama(str(path), verbose=False, n_threads=1).close()
    assert key in loading._passed
    Llama(str(path), vocab_only=True, verbose=False).close()  # a full load's verdict covers vocab_only
    assert loading._key(path, True) not in loading._passed
    os.utime(path, ns=(1, 1))  # a changed file is a new file
    assert loading._key(path, False) not in loading._passed


def test_a_clean_failure_in_the_probe_is_reported_with_llamas_reason(tmp_path, tiny_model_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model_path.read_bytes()[:-4096])  # the header is whole, the last tensor is not
    with pytest.raises(ModelLoadError, match="(?i)tensor|data|file"):
        loading.probe(cut)


def test_a_probe_that_cannot_start_warns_and_loads(tmp_path, monkeypatch):
    path = write_tiny_llama(tmp_path / "ok.gguf")
    monkeypatch.setattr(sys, "executable", "/bin/false")  # not a Python at all (as in some embedders)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Llama(str(path), verbose=False, n_threads=1).close()
    assert any("probe could not run" in str(w.message) for w in caught)


def test_an_assert_that_fires_only_while_decoding_is_caught(tmp_path):
    """A negative norm epsilon passes loading and context creation; ggml's RMS-norm kernel
    asserts on it at the first decode (found by a sweep of header values, issue 15)."""
    path = write_tiny_llama(tmp_path / "eps.gguf", rms_eps=-1.0)
    run = _load_in_child(path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ModelLoadError") and "eps >= 0" in run.stdout, run.stdout
