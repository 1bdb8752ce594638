"""Server settings: every flag is also a SARAI_* variable, flags win, bad values are refused by name."""

from __future__ import annotations

import argparse

import pytest

from sarai_llama.server import settings as S


def test_defaults_come_from_one_table() -> None:
    s = S.parse(["m.gguf"], environ={})
    for opt in S.OPTIONS:
        assert getattr(s, opt.name) == opt.default, opt.name
    assert s.model == "m.gguf" and s.model_id == "m.gguf"


def test_env_sets_every_option_and_flags_win() -> None:
    env = {"SARAI_MODEL": "/models/a.gguf", "SARAI_PORT": "9001", "SARAI_PARALLEL": "8", "SARAI_THREADS": "3",
           "SARAI_API_KEY": "k1, k2", "SARAI_METRICS_PUBLIC": "yes", "SARAI_MAX_QUEUE": "0",
           "SARAI_DRAIN_TIMEOUT": "2.5", "SARAI_JOB": "coding"}
    s = S.parse([], environ=env)
    assert (s.model, s.port, s.parallel, s.threads, s.api_key, s.metrics_public, s.max_queue, s.drain_timeout,
            s.job) == ("/models/a.gguf", 9001, 8, 3, ["k1", "k2"], True, 0, 2.5, "coding")
    s = S.parse(["b.gguf", "--port", "9002", "-np", "2", "--threads", "auto"], environ=env)
    assert (s.model, s.port, s.parallel, s.threads) == ("b.gguf", 9002, 2, "auto")


def test_every_option_has_a_flag_and_a_variable() -> None:
    parser = argparse.ArgumentParser()
    S.add_arguments(parser, {})
    flags = {a for action in parser._actions for a in action.option_strings}
    for opt in S.OPTIONS:
        assert opt.flag in flags and opt.env == "SARAI_" + opt.name.upper()
    assert set(S.Settings.__dataclass_fields__) == {o.name for o in S.OPTIONS} | {"model"}


@pytest.mark.parametrize("argv", [["m", "--threads", "0"], ["m", "--threads", "many"], ["m", "--port", "0"],
                                  ["m", "--metrics-public", "maybe"], ["m", "--parallel", "-1"]])
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        S.parse(argv, environ={})
    assert exc.value.code == 2


def test_speculation_flags_and_variables() -> None:
    """llama-server's spellings; --spec-type none turns the engine's drafts off, whatever --draft-max says."""
    s = S.parse(["m", "--spec-type", "ngram-simple", "--spec-draft-n-max", "12", "--draft-min", "2",
                 "--spec-ngram-simple-size-n", "4"], environ={})
    assert (s.spec_type, s.draft_max, s.draft_min, s.spec_ngram_size_n) == ("ngram-simple", 12, 2, 4)
    assert (s.speculation().draft_max, s.speculation().ngram_size) == (12, 4)
    s = S.parse(["m"], environ={"SARAI_SPEC_TYPE": "none", "SARAI_DRAFT_MAX": "5"})
    assert s.draft_max == 5 and not s.speculation().enabled
    for argv in (["m", "--spec-type", "ngram-mod"], ["m", "--draft-max", "257"], ["m", "--spec-ngram-size-n", "0"]):
        with pytest.raises(SystemExit):
            S.parse(argv, environ={})


def test_bad_env_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        S.parse(["m"], environ={"SARAI_PARALLEL": "lots"})
    assert "SARAI_PARALLEL" in capsys.readouterr().err


def test_threads_auto_follows_the_job_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARAI_THREAD_MODE", "auto")
    monkeypatch.setenv("CODING_THREADS", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert S.resolve_threads("auto", "coding").n_threads == 1
    # a count above the CPUs this process may use (the pod's quota) is cut to them
    from sarai_llama import cpu

    usable = cpu.usable_cpus()[0]
    monkeypatch.setenv("CODING_THREADS", str(usable + 5))
    assert S.resolve_threads("auto", "coding").n_threads == usable
    assert S.resolve_threads(7, "coding").n_threads == 7


def test_kv_cache_types_and_flash_attention_as_llama_server() -> None:
    s = S.parse(["m.gguf", "-ctk", "q8_0", "-ctv", "Q8_0", "-fa", "on"], environ={})
    assert (s.cache_type_k, s.cache_type_v, s.flash_attn) == ("q8_0", "q8_0", "on")
    s = S.parse(["m.gguf"], environ={"SARAI_CACHE_TYPE_K": "q4_0", "SARAI_FLASH_ATTN": "0"})
    assert (s.cache_type_k, s.cache_type_v, s.flash_attn) == ("q4_0", "f16", "off")
    for bad in (["-ctk", "q3_k"], ["-fa", "maybe"]):
        with pytest.raises(SystemExit):
            S.parse(["m.gguf", *bad], environ={})
