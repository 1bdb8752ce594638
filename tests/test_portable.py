"""The zero-compile portable build, proven on this machine.

The zero-compile wheel as published (cibuildwheel's; built from the sdist by this
machine's compiler where podman cannot run) is installed once into a private
directory (session fixture) and exercised in subprocesses: the variant loaded
here, a forced variant, a static instruction check of every shipped binary,
and real runs under QEMU user-mode emulation of older CPUs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import sarai_llama
import wheels  # tools/, on sys.path through conftest
from conftest import build_into_site, install_into_site, zero_compile_wheel

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

DECODE = (
    "import json, sys, sarai_llama as s\n"
    "llm = s.Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False)\n"
    "out = llm('the a', max_tokens=4, temperature=0)\n"
    "print(json.dumps({'variant': s.system_info()['cpu_variant'], 'build': s.build_info()['build_type'],"
    " 'n': out['usage']['completion_tokens'], 'text': out['choices'][0]['text'],"
    " 'numpy_imported': 'numpy' in sys.modules}))\n"
)


def check_sdist(sdist: Path) -> None:
    """The sdist carries the vendored llama.cpp (its pin record included) and none of its tests,
    CUDA backend, models, docs or examples."""
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    assert f"{top}/vendor/llama.cpp/.sarai-vendor.json" in names
    bad = [n for n in names if "/vendor/llama.cpp/tests/" in n or "/ggml-cuda/" in n or "/vendor/llama.cpp/models/" in n
           or "/vendor/llama.cpp/docs/" in n or "/vendor/llama.cpp/examples/" in n]
    assert not bad, bad[:5]


@pytest.fixture(scope="session")
def portable_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zero-compile wheel, installed into a private site directory.

    It is the wheel as published (cibuildwheel's, ``zero_compile_wheel``: .ci/run has it ready)
    where this machine can build that; elsewhere (no podman as root) a portable wheel that
    this machine's compiler builds from the sdist, as pip does where no wheel fits."""
    tmp = tmp_path_factory.mktemp("portable")
    (tmp / "wheels").mkdir()
    if (published := zero_compile_wheel()) is not None:
        return install_into_site(Path(shutil.copy2(published, tmp / "wheels" / published.name)), tmp / "site")
    pytest.importorskip("build")
    with tarfile.open(wheels.sdist(wheels.source_hash("manylinux"))) as tar:
        top = tar.getnames()[0].split("/")[0]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:
            tar.extractall(tmp)
    wheel, site = build_into_site(tmp / top, tmp)
    assert "native" not in wheel.name
    return site


def test_sdist_carries_llama_cpp_without_its_tests() -> None:
    """The sdist that `make wheel` builds from (tools/wheels.py keeps it per source hash)."""
    pytest.importorskip("build")
    check_sdist(wheels.sdist(wheels.source_hash("manylinux")))


def run_portable(site: Path, code: str, *args: str, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, PYTHONPATH=str(site), **(env or {}))
    return subprocess.run([*(prefix or []), sys.executable, "-c", code, *args], env=full_env,
                          capture_output=True, text=True, cwd="/", timeout=600)


def test_wheel_holds_only_our_package(portable_site):
    import zipfile

    (wheel,) = (portable_site.parent / "wheels").glob("sarai_llama-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    # No stray include/, lib/, bin/; sarai_llama.libs/ is auditwheel's (LLVM's libomp) in a published wheel.
    assert {t for t in tops if not t.endswith(".dist-info")} - {"sarai_llama.libs"} == {"sarai_llama"}
    libs = sorted(p.name for p in (portable_site / "sarai_llama" / "lib").iterdir())
    assert {"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu-x64.so", "libggml-cpu-sse42.so",
            "libggml-cpu-haswell.so", "libggml-cpu-zen4.so"} <= set(libs)
    assert not any("sapphirerapids" in n for n in libs)  # the AMX variant is never shipped
    assert not any(n.endswith((".a", ".h", ".cmake", ".pc")) for n in libs)


def test_portable_picks_a_variant_and_decodes(portable_site, tiny_model_path):
    run = run_portable(portable_site, DECODE, str(tiny_model_path))
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert result["build"] == "portable" and result["n"] >= 1
    shipped = json.loads(run_portable(portable_site, "import json,sarai_llama as s;print(json.dumps(s.build_info()['cpu_variants']))").stdout)
    assert result["variant"] in shipped
    assert result["variant"] != "sapphirerapids"


def test_forced_variant(portable_site, tiny_model_path):
    auto = json.loads(run_portable(portable_site, DECODE, str(tiny_model_path)).stdout)
    forced = run_portable(portable_site, DECODE, str(tiny_model_path), env={"SARAI_CPU_VARIANT": "sse42"})
    assert forced.returncode == 0, forced.stderr[-2000:]
    result = json.loads(forced.stdout)
    assert result["variant"] == "sse42"
    assert result["text"] == auto["text"]  # same greedy tokens from different kernels (F32 tiny model)
    bad = run_portable(portable_site, "import sarai_llama", env={"SARAI_CPU_VARIANT": "no-such-cpu"})
    assert bad.returncode == 1 and "ImportError" in bad.stderr and "available" in bad.stderr


def test_portable_gemma_decode(portable_site, gemma_path):
    code = ("import sys, sarai_llama as s\nllm = s.Llama(sys.argv[1], n_ctx=128, verbose=False)\n"
            "print(llm('The Eiffel Tower is located in the city of', max_tokens=4, temperature=0)['choices'][0]['text'])")
    run = run_portable(portable_site, code, str(gemma_path))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(" Paris")


# ------------------------------------------------------------------ static instruction check
AVX_REGS = re.compile(r"%ymm\d+|%zmm\d+")
AVX512_ONLY = re.compile(r"%zmm\d+|%k[1-7]\b")
# Instructions beyond baseline x86-64 (SSE2) that compilers emit without VEX.
# (tzcnt is absent on purpose: GCC emits `rep bsf` for ctz, which objdump shows
# as tzcnt and which runs as bsf on CPUs without BMI1.)
POST_SSE2 = re.compile(
    r"\s(pshufb|palignr|phadd\w*|pabs[bwd]|pmaddubsw|pmulhrsw|ptest|pblendvb|pblendw|blendv?p[sd]|"
    r"pmaxs[bd]|pmins[bd]|pmaxu[wd]|pminu[wd]|pmulld|pmovzx\w+|pmovsx\w+|pcmpeqq|pcmpgtq|pextr[bdq]|pinsr[bdq]|"
    r"round[sp][sd]|dpp[sd]|insertps|extractps|packusdw|popcnt|lzcnt|andn|bzhi|shlx|shrx|sarx|pdep|pext|mulx|"
    r"crc32\w*|movbe|lddqu|haddp[sd]|movddup|movs[hl]dup)\s"
)
VEX_MNEMONIC = re.compile(r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{2} )+\s*(v[a-z0-9]+)\s", re.M)


def disassemble(path: Path) -> str:
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=True).stdout


def offending(text: str, level: str) -> list[str]:
    bad = []
    for line in text.splitlines():
        if "\t" not in line:
            continue
        insn = line.split("\t", 1)[1] if line.count("\t") else line
        mnemonic = insn.split()[0] if insn.split() else ""
        if level in ("baseline", "sse42"):
            vex = mnemonic.startswith("v") and mnemonic not in ("verr", "verw")
            if vex or AVX_REGS.search(insn) or (level == "baseline" and POST_SSE2.search(f" {insn} ")):
                bad.append(insn.strip())
        elif level == "avx2":
            if AVX512_ONLY.search(insn):
                bad.append(insn.strip())
        if len(bad) >= 5:
            break
    return bad


VARIANT_LEVEL = {"x64": "baseline", "sse42": "sse42", "sandybridge": "avx2", "ivybridge": "avx2",
                 "piledriver": "avx2", "haswell": "avx2", "alderlake": "avx2"}


def test_shipped_binaries_stay_within_their_isa(portable_site):
    if shutil.which("objdump") is None:
        pytest.skip("objdump is not installed (apt-get install binutils)")
    pkg = portable_site / "sarai_llama"
    core = next(pkg.glob("_core*.so"))
    for path in [core, pkg / "lib" / "libllama.so", pkg / "lib" / "libggml.so", pkg / "lib" / "libggml-base.so"]:
        assert offending(disassemble(path), "baseline") == [], f"{path.name} uses instructions beyond x86-64"
    for variant, level in VARIANT_LEVEL.items():
        path = pkg / "lib" / f"libggml-cpu-{variant}.so"
        assert offending(disassemble(path), level) == [], f"{path.name} uses instructions beyond {level}"


# ------------------------------------------------------------------ QEMU: older CPUs for real
@pytest.mark.parametrize("qemu_cpu, expected", [("Nehalem", "sse42"), ("SandyBridge", "sandybridge"), ("Haswell", "haswell")])
def test_qemu_old_cpus_get_their_variant(portable_site, tiny_model_path, qemu_cpu, expected):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    run = run_portable(portable_site, DECODE, str(tiny_model_path), prefix=[qemu, "-cpu", qemu_cpu],
                       env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["variant"] == expected and result["n"] >= 1
    assert result["numpy_imported"] is False  # text generation never needs numpy


ARRAY_API = (
    "import json, sys, sarai_llama as s\n"
    "llm = s.Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False)\n"
    "text = llm('the a', max_tokens=4, temperature=0)['choices'][0]['text']\n"
    "try:\n"
    "    llm.input_ids\n"
    "    error = None\n"
    "except ImportError as exc:\n"
    "    error = f'{type(exc).__name__}: {exc}'\n"
    "print(json.dumps({'text': text, 'error': error}))\n"
)


def test_qemu_pre_avx_cpu_without_a_working_numpy(portable_site, tiny_model_path, tmp_path):
    """A numpy whose import dies with SIGILL (as numpy 2.4 wheels do on some pre-AVX CPUs):
    text generation still works, and the first array API raises a clear ImportError."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    broken = tmp_path / "broken-numpy" / "numpy"
    broken.mkdir(parents=True)
    # A real SIGILL on import: the failure mode of a wheel built beyond this CPU's ISA.
    (broken / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{broken.parent}{os.pathsep}{portable_site}"}
    run = subprocess.run([qemu, "-cpu", "Nehalem", sys.executable, "-c", ARRAY_API, str(tiny_model_path)],
                         env=dict(os.environ, **env), capture_output=True, text=True, cwd="/", timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["text"]
    assert result["error"] is not None and result["error"].startswith("NumpyUnavailableError")
    assert "SIGILL" in result["error"] and "generating text work without it" in result["error"]


def test_qemu_native_build_refuses_old_cpu():
    """The native build (installed here) under an older CPU: ImportError, not SIGILL."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    features = sarai_llama.build_info()["isa_features"]
    if sarai_llama.build_info()["build_type"] != "native":
        pytest.skip("needs a native build installed (make install-optimized)")
    # The newest qemu model that lacks something this build uses (Intel or AMD alike).
    older = [("Haswell", "avx512f"), ("Nehalem", "avx")]
    pick = next(((cpu, feature) for cpu, feature in older if feature in features), None)
    if pick is None:
        pytest.skip("this native build uses nothing that qemu's Nehalem lacks")
    qemu_cpu, feature = pick
    run = subprocess.run([qemu, "-cpu", qemu_cpu, sys.executable, "-c", "import sarai_llama"],
                         capture_output=True, text=True, cwd="/", timeout=600)
    assert run.returncode == 1, (run.returncode, run.stderr[-1000:])
    assert "BuildMismatchError" in run.stderr and feature in run.stderr
