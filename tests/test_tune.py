"""sarai_llama.tune's saved results: tune.json is a file anyone may edit, so a damaged
one is ignored with a warning (issue 15), never handed to llama.cpp or crashed on."""

from __future__ import annotations

import json

import pytest

from sarai_llama import Llama, tune


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path / "sarai-llama" / "tune.json"


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe\x00", b"[]", b"42", b'{"KEY": []}', b'{"KEY": {"default": 7}}',
    b'{"KEY": {"default": {"n_threads": 100000, "repack": true}}}',
    b'{"KEY": {"default": {"n_threads": "4", "repack": true}}}',
    b'{"KEY": {"default": {"n_threads": 2, "repack": "yes"}}}',
])
def test_damaged_tune_file_is_ignored(config_home, tiny_model_path, content):
    config_home.parent.mkdir(parents=True)
    config_home.write_bytes(content.replace(b"KEY", json.dumps(tune.tune_key(tiny_model_path))[1:-1].encode()))
    with pytest.warns(RuntimeWarning, match="ignoring"):
        assert tune.load_saved(tiny_model_path) is None
    with pytest.warns(RuntimeWarning, match="ignoring"):
        Llama(str(tiny_model_path), n_threads="tuned", verbose=False).close()  # falls back to the heuristic
    tune.save(tiny_model_path, "default", {"n_threads": 1, "repack": False})  # a damaged file is replaced
    assert tune.load_saved(tiny_model_path) == {"n_threads": 1, "repack": False}


def test_no_tune_file_is_no_warning(config_home, tiny_model_path, recwarn):
    assert tune.load_saved(tiny_model_path) is None
    assert not [w for w in recwarn if "ignoring" in str(w.message)]
