"""The zero-compile wheels: [tool.cibuildwheel], `make wheel` (tools/wheels.py) and the release
workflow kept to one configuration, `make install-fast`'s choice of wheel, and the wheels run on
Debian 11, 12 and 13 in containers with no compiler and no network (tools/wheel_debian.py).

The container tests are slow on a fresh machine: one cibuildwheel run builds the wheels for
CPython 3.11 and 3.13 in the local build image (tools/wheel_image.py; the first compile with an
empty ccache takes 20 to 30 min on a 2-core VM under load, the second CPython a few minutes;
nothing once build/wheel/ holds them for these sources, which `make image` shares) beside four
Debian images (3 to 5 min each, once per machine) and, for Debian 11, CPython 3.11 (about 10 to
15 min, once per machine); .ci/run starts all of it beside the native build
(`tools/wheel_debian.py --prepare`). With SARAI_WHEELHOUSE (the release workflow) the checks take
the wheels from that folder instead of building them.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import can_build_wheels

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import wheel_debian  # noqa: E402
import wheel_steps  # noqa: E402
import wheels  # noqa: E402

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

THIS_PYTHON = "%d.%d" % sys.version_info[:2]


# ------------------------------------------------------------------------------ fast
#: What `make wheel` may set beyond [tool.cibuildwheel]: where and on what it runs, and which of
#: the selector's CPythons; never how a wheel is built, repaired or tested.
LOCAL_SETTINGS = {"CIBW_CONTAINER_ENGINE", f"CIBW_MANYLINUX_{platform.machine().upper()}_IMAGE", "CIBW_ARCHS_LINUX",
                  "CIBW_BUILD"}


def cibw_identifiers(env: dict[str, str]) -> list[str]:
    """The builds cibuildwheel itself selects from pyproject.toml with ``env`` (no container runs)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    run = subprocess.run([sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", "linux",
                          "--archs", platform.machine()], cwd=ROOT, capture_output=True, text=True,
                         env={**clean, **env}, check=True)
    return run.stdout.split()


def test_cibuildwheel_is_the_one_wheel_configuration(tmp_path: Path) -> None:
    """[tool.cibuildwheel] describes the release wheel; `make wheel` (tools/wheels.py build) runs
    cibuildwheel with it and sets only the local engine, image and CPython subset; the release
    workflow runs pypa/cibuildwheel with it and sets nothing; both build from the sdist."""
    pytest.importorskip("cibuildwheel", reason="python tools/deps.py wheel")
    yaml = pytest.importorskip("yaml", reason="python tools/deps.py deploy")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    cibw = project["tool"]["cibuildwheel"]
    tags = ["cp" + v.replace(".", "") for v in wheels.SUPPORTED]
    assert project["project"]["requires-python"] == f">={wheels.SUPPORTED[0]}"
    assert cibw["build"].split() == [f"{t}-*" for t in tags]
    assert cibw_identifiers({}) == [f"{t}-manylinux_{platform.machine()}" for t in tags]
    # The same steps wherever it runs: the toolchain, the repair and the checks, the smoke test.
    assert cibw["before-all"] == "python {project}/tools/wheel_steps.py toolchain"
    assert "auditwheel repair --plat manylinux_2_28_$(uname -m)" in cibw["repair-wheel-command"]
    assert cibw["repair-wheel-command"].endswith("python {project}/tools/wheels.py check {dest_dir}/*.whl")
    assert cibw["test-command"] == "python {project}/tools/wheel_steps.py smoke"
    assert cibw["config-settings"]["cmake.define.CMAKE_SHARED_LINKER_FLAGS"] == "-Wl,-Bsymbolic"
    paths = [*cibw["config-settings"].values(), cibw["environment"]["CC"], cibw["environment"]["CXX"]]
    assert all(str(wheel_steps.TOOLS) in v for v in paths if "/opt/" in v)
    assert wheel_steps.GLIBC == wheels.GLIBC

    # make wheel: cibuildwheel, from the sdist, with local settings only.
    makefile = (ROOT / "Makefile").read_text()
    assert "\t$(PYTHON) tools/wheels.py build " in makefile.split("\nwheel:", 1)[1].split("\n\n", 1)[0]
    source = inspect.getsource(wheels.build)
    assert '"-m", "cibuildwheel", "--platform", "linux"' in source and "str(source)" in source
    env = wheels.cibuildwheel_env(["3.11", "3.13"], "localhost/image:tag", tmp_path)
    assert set(env) <= LOCAL_SETTINGS, set(env) - LOCAL_SETTINGS
    assert env["CIBW_CONTAINER_ENGINE"].startswith("podman; create_args: --network=none ")
    assert cibw_identifiers(env) == [f"cp311-manylinux_{platform.machine()}", f"cp313-manylinux_{platform.machine()}"]

    # The workflow: pypa/cibuildwheel, of the version the [wheel] extra allows, on the sdist job's
    # sdist, no CIBW_ setting of its own; the Debian checks take its wheels; publish needs the re-check.
    jobs = yaml.safe_load((ROOT / ".github/workflows/wheels.yml").read_text())["jobs"]
    steps = jobs["wheels"]["steps"]
    (cibw_step,) = [s for s in steps if s.get("uses", "").startswith("pypa/cibuildwheel@")]
    (extra,) = [r for r in project["project"]["optional-dependencies"]["wheel"] if r.startswith("cibuildwheel")]
    assert Requirement(extra).specifier.contains(cibw_step["uses"].split("@v", 1)[1])
    assert not [k for k in cibw_step.get("env", {}) if k.startswith("CIBW_")], cibw_step["env"]
    assert "sdist" in cibw_step["with"]["package-dir"] and "sdist" in jobs["wheels"]["needs"]
    output = cibw_step["with"]["output-dir"]
    runs = [s.get("run", "") for s in steps]
    assert any(f"SARAI_WHEELHOUSE={output}" in r and "pytest" in r and "tests/test_wheels.py" in r for r in runs), runs
    assert any("tools/wheels.py check" in s.get("run", "") for s in jobs["check"]["steps"])
    assert jobs["publish"]["needs"] == ["sdist", "check"]
    commands = " ".join(s.get("run", "") for job in jobs.values() for s in job["steps"])
    for word in ("auditwheel", "pip wheel", "make wheel", "cibuildwheel"):
        assert word not in commands, f"{word} in a run step of wheels.yml: [tool.cibuildwheel] builds and repairs"


def test_install_fast_finds_only_a_wheel_this_python_can_install(tmp_path: Path) -> None:
    cp = "cp%d%d" % sys.version_info[:2]
    other = "cp%d%d" % (sys.version_info[0], sys.version_info[1] + 1)
    names = {
        "manylinux": f"sarai_llama-0.1.0-{cp}-{cp}-{wheels.PLATFORM}.whl",
        "native": f"sarai_llama-0.1.0-1native-{cp}-{cp}-linux_x86_64.whl",
        "other": f"sarai_llama-0.1.0-{other}-{other}-{wheels.PLATFORM}.whl",
    }
    for key in ("native", "other"):
        (tmp_path / names[key]).touch()
    assert wheels.find(tmp_path) is None  # a native wheel and another Python's: build from source
    (tmp_path / names["manylinux"]).touch()
    assert wheels.find(tmp_path) == tmp_path / names["manylinux"]
    run = subprocess.run([sys.executable, str(ROOT / "tools/wheels.py"), "find", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and not run.stdout


# ------------------------------------------------------------------------------ built wheels
@pytest.fixture(scope="module")
def built(prepared: wheel_debian.Prepared) -> Path:
    """This Python's wheel, from the same cibuildwheel run as the Debian checks' where they share it."""
    folder = prepared.built(THIS_PYTHON) or wheel_debian.wheel_for(THIS_PYTHON)
    (whl,) = folder.glob(f"sarai_llama-*-cp{THIS_PYTHON.replace('.', '')}-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_is_manylinux_2_28_and_ships_everything_it_loads(built: Path) -> None:
    assert built.name.endswith(f"-{wheels.PLATFORM}.whl")
    assert wheels.check(built) == []
    show = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(built)], capture_output=True, text=True,
                          check=True).stdout
    assert "is consistent with the following platform tag" in " ".join(show.split()), show  # <= 2_28: check()
    assert "libgomp" not in show and "libstdc++" not in show, show


@pytest.mark.slow
def test_every_variant_loads_from_the_repaired_wheel(built: Path, tmp_path: Path, gemma_path: Path) -> None:
    """Installed from the repaired wheel: the loader dlopens every shipped variant to score it, then
    loads the best and generates, and a bad grammar is a ValueError with the parser's message; each
    variant this CPU can run also loads when forced."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(built)],
                   check=True)
    code = ("import json, sys, sarai_llama as s\n"
            "llm = s.Llama(sys.argv[1], n_ctx=128, n_threads=1, verbose=False)\n"
            "out = llm('The Eiffel Tower is located in the city of', max_tokens=6, temperature=0)\n"
            "try:\n"
            "    s.LlamaGrammar.from_string('root ::= (((')\n"
            "except ValueError as e:\n"
            "    bad = str(e)\n"
            "print(json.dumps({'variant': s.system_info()['cpu_variant'], 'text': out['choices'][0]['text'],"
            " 'file': s.__file__, 'bad_grammar': bad}))\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("SARAI_CPU_VARIANT", None)
    run = subprocess.run([sys.executable, "-c", code, str(gemma_path)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    auto = json.loads(run.stdout.strip().splitlines()[-1])
    assert auto["file"].startswith(str(site)) and "Paris" in auto["text"], auto
    # The parser's message, not "Caught an unknown exception!" (its exception stays in _core).
    assert auto["bad_grammar"].startswith("grammar does not parse: expecting ')'"), auto
    for variant in ("x64", "sse42", "haswell"):
        run = subprocess.run([sys.executable, "-c", code, str(gemma_path)], capture_output=True, text=True,
                             env=dict(env, SARAI_CPU_VARIANT=variant), cwd=tmp_path)
        if "lacks the instructions" in run.stderr:
            continue
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout.strip().splitlines()[-1])["variant"] == variant


@pytest.fixture(scope="module")
def prepared() -> wheel_debian.Prepared:
    """Everything the wheel tests need, started at once. `make wheel` runs cibuildwheel with
    podman; the release workflow hands its wheels in through SARAI_WHEELHOUSE."""
    if why := can_build_wheels():
        pytest.skip(why)
    return wheel_debian.Prepared(list(wheel_debian.RELEASES))


@pytest.mark.slow
@pytest.mark.parametrize("suite", list(wheel_debian.RELEASES))
def test_wheel_runs_on_debian_without_a_compiler(suite: str, prepared: wheel_debian.Prepared,
                                                 gemma_path: Path) -> None:
    rel = wheel_debian.RELEASES[suite]
    try:
        folder = prepared.wheels(suite)
    except LookupError as exc:
        pytest.skip(f"Debian {rel.debian} runs CPython {rel.python}: {exc}")
    run = wheel_debian.check_release(rel, folder, gemma_path.resolve())
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    glibc = {11: "2.31", 12: "2.36", 13: "2.41"}[rel.debian]
    assert f"debian {rel.debian} glibc {glibc}" in out, out[:500]
    assert "CPU backend: " in out and "highest score of 13 shipped variants" in out, out[-2000:]
    assert "Paris" in out.split("CPU backend: ", 1)[1], out[-2000:]
    assert "bad grammar: ValueError: grammar does not parse: expecting ')'" in out, out[-2000:]
