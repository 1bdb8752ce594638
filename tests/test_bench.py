"""``sarai-llama bench`` on the real core: llama-bench's fields and formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sarai_llama import bench


def test_parse_int_list():
    assert bench.parse_int_list("1,2,4") == [1, 2, 4]
    assert bench.parse_int_list("1-3,8") == [1, 2, 3, 8]
    with pytest.raises(ValueError):
        bench.parse_int_list("0")


def test_bench_measures_and_formats(tiny_model_path):
    results = bench.run_bench(tiny_model_path, n_prompt=[32], n_gen=[8], threads=[1], n_batch=[16], repetitions=2)
    assert [r.test for r in results] == ["pp32", "tg8"]
    for r in results:
        assert r.avg_ts > 0 and len(r.samples_ts) == 2 and r.stddev_ts >= 0
        assert r.cpu_variant and r.build_type in ("native", "portable")
    rows = json.loads(bench.format_results(results, "json"))
    for key in ("n_prompt", "n_gen", "n_threads", "n_batch", "n_ubatch", "avg_ts", "stddev_ts", "samples_ts", "model_filename"):
        assert key in rows[0]
    parsed = list(csv.DictReader(io.StringIO(bench.format_results(results, "csv"))))
    assert float(parsed[1]["avg_ts"]) == pytest.approx(results[1].avg_ts)
    md = bench.format_results(results, "md")
    assert "| pp32 |" in md and "| tg8 |" in md


def test_bench_cli_json(tiny_model_path):
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "bench", str(tiny_model_path), "-p", "16", "-n", "4",
                          "-t", "1", "-r", "1", "-o", "json"], capture_output=True, text=True, cwd="/", check=True)
    rows = json.loads(run.stdout)
    assert {r["n_prompt"] for r in rows} == {16, 0} and rows[0]["n_threads"] == 1


def test_compare_two_result_files(tiny_model_path, tmp_path):
    results = bench.run_bench(tiny_model_path, n_prompt=[16], n_gen=[4], threads=[1], n_batch=[16], repetitions=1)
    a = tmp_path / "a.json"
    a.write_text(bench.format_results(results, "json"))
    rows = json.loads(a.read_text())
    for row in rows:
        row["avg_ts"] *= 2
    b = tmp_path / "b.json"
    b.write_text(json.dumps(rows))
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "bench", "--compare", str(a), str(b)],
                         capture_output=True, text=True, cwd="/", check=True)
    assert "| pp16 | 1 | 16 |" in run.stdout and "2.000 |" in run.stdout


def test_tune_saves_and_llama_auto_uses_it(tiny_model_path, tmp_path, monkeypatch):
    from sarai_llama import Llama, tune

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    best, trials = tune.tune(tiny_model_path, budget_s=5, n_prompt=32, n_gen=4)
    assert trials and best in trials and best.pp_ts > 0 and best.tg_ts > 0
    assert {t.repack for t in trials} == {True, False}  # repacking is part of the search
    tune.save(tiny_model_path, "coding", {**tune.result_record(best, "balanced"), "n_threads": 1})
    assert tune.load_saved(tiny_model_path, "coding")["n_threads"] == 1
    assert tune.load_saved(tiny_model_path, "research") is None
    llm = Llama(str(tiny_model_path), n_threads="tuned", job="coding", verbose=False)
    assert llm.n_threads == 1 and llm.tuned is not None
    untuned = Llama(str(tiny_model_path), n_threads="tuned", job="research", verbose=False)
    assert untuned.tuned is None and untuned.n_threads >= 1


def test_bench_plot(tiny_model_path, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "threads.png"
    subprocess.run([sys.executable, "-m", "sarai_llama", "bench", str(tiny_model_path), "-p", "16", "-n", "4",
                    "-t", "1,2", "-r", "1", "--plot", str(out)], capture_output=True, text=True, cwd="/", check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_bench_refuses_hostile_model_without_dying(tmp_path):
    """Every load path (not only Llama) refuses files llama.cpp would abort on."""
    from conftest import write_tiny_llama
    from sarai_llama import _core

    dup = write_tiny_llama(tmp_path / "dup.gguf", duplicate_token=True)
    with pytest.raises(ValueError, match="duplicate"):
        _core.Model(str(dup))
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "bench", str(dup), "-p", "8", "-n", "2", "-r", "1"],
                         capture_output=True, text=True, cwd="/")
    assert run.returncode == 2 and "duplicate" in run.stderr


TOOLS = sorted((Path(__file__).resolve().parent.parent / "tools").glob("bench_*.py"))


@pytest.mark.parametrize("script", [*TOOLS, TOOLS[0].parent / "compare_servers.py"], ids=lambda p: p.name)
def test_every_benchmark_tool_answers_help(script: Path) -> None:
    """A benchmark that nobody runs in CI must still import and parse its arguments (none may rot)."""
    got = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and got.stdout.startswith("usage:"), got.stderr[-2000:]


def test_compare_servers_measures_a_real_server(tiny_model_path: Path) -> None:
    """compare_servers.py end to end on ours with the tiny model: the load generator it starts
    (bench_serve.py) answers rows, and the table has them (it once ran its library file instead,
    which printed nothing)."""
    script = TOOLS[0].parent / "compare_servers.py"
    got = subprocess.run([sys.executable, str(script), "--model", str(tiny_model_path), "--parallel", "2",
                          "--ctx-size", "256", "-c", "1,2", "-n", "4", "-r", "1", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    rows = [line for line in got.stdout.splitlines() if line.startswith("| sarai-llama serve |")]
    assert len(rows) == 2 and rows[1].split("|")[2].strip() == "2", got.stdout
    assert all(row.rstrip(" |").endswith(f"of {4 * c}") for row, c in zip(rows, (1, 2))), got.stdout
