"""The build: vendored sources, recorded metadata, the ISA guard, real decoding, the sdist."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import sarai_llama
from sarai_llama import _build_info as bi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import vendor  # noqa: E402  (tools/vendor.py: the pins)

sys.path.insert(0, str(ROOT / "cmake"))
import write_build_info  # noqa: E402  (the macro -> cpuinfo name table)

LLAMA_PIN = vendor.PINS["llama.cpp"]


def proc_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("no /proc/cpuinfo flags on this platform")


def test_vendor_is_pinned_gitlinks_and_filled():
    ls = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s", "vendor"], capture_output=True, text=True)
    if ls.returncode != 0 or not ls.stdout:
        pytest.skip("not a git checkout (sdist)")
    entries = [line.split() for line in ls.stdout.splitlines()]
    assert [(e[0], e[3]) for e in entries] == [("160000", "vendor/OpenBLAS"), ("160000", "vendor/llama.cpp")]
    assert {e[3]: e[1] for e in entries} == {
        "vendor/llama.cpp": vendor.PINS["llama.cpp"].commit,
        "vendor/OpenBLAS": vendor.PINS["OpenBLAS"].commit,
    }
    assert vendor.main(["--check"]) == 0
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "vendor"], capture_output=True, text=True)
    assert status.stdout == ""


def test_build_info_is_complete_and_true():
    info = sarai_llama.build_info()
    for key in ("build_type", "date", "hostname", "cpu_model", "cpu_flags", "cmake_flags", "llama_version",
                "compiler", "reproducible", "optimal_threads", "blas", "lto", "isa_features", "python", "sarai_llama"):
        assert key in info, key
    assert info["build_type"] in ("native", "portable")
    when = dt.datetime.fromisoformat(info["date"])
    assert when.tzinfo is not None and when <= dt.datetime.now(dt.timezone.utc)
    assert info["llama_version"]["commit"] == LLAMA_PIN.commit
    assert info["llama_version"]["build_number"] == 11312
    assert info["sarai_llama"] == sarai_llama.__version__
    assert info["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert info["reproducible"] is (info["build_type"] != "native")
    assert info["optimal_threads"]["value"] >= 1 and "build machine" in info["optimal_threads"]["note"]
    assert any(f.startswith("GGML_NATIVE=") for f in info["cmake_flags"])
    assert info["compiler"].split()[0] in ("GNU", "Clang", "AppleClang", "IntelLLVM")
    # Built here (CI builds, then tests on the same machine): the facts are this machine's.
    # cpu_flags is the kernel's view; isa_features what the build may execute, so it must
    # be within the CPU's own (CPUID) view, and beyond the kernel's only where the kernel
    # is known to hide a feature (RDSEED on AMD Zen 5).
    if info["hostname"] == socket.gethostname() and sys.platform == "linux":
        assert set(info["cpu_flags"]) >= {f for f in proc_flags() if f.startswith(("avx", "sse", "fma", "f16c"))}
        from sarai_llama import _cpuid

        cpuid = _cpuid.features()
        if cpuid is not None:
            assert set(info["isa_features"]) <= set(cpuid)
        assert set(info["isa_features"]) - proc_flags() <= set(bi.KERNEL_MAY_HIDE)


def test_requested_build_type_is_installed():
    """`pip install --config-settings=native=true .` (bare key) gives a native, LTO build."""
    expected = os.environ.get("SARAI_EXPECT_BUILD")
    if not expected:
        pytest.skip("set SARAI_EXPECT_BUILD=native|portable to check what make installed")
    info = sarai_llama.build_info()
    assert info["build_type"] == expected
    if expected == "native":
        assert info["lto"] is True
        assert "-march=native" in info["isa_flags"]
        assert "avx2" in info["isa_features"] or "avx2" not in proc_flags()


def test_no_amx_kernels_compiled_in():
    """AMX kernels crash on Q4_K at this commit (llama.cpp #20824): none of our builds has them."""
    info = sarai_llama.build_info()
    assert not {"amx_tile", "amx_int8", "amx_bf16"} & set(info["isa_features"])
    assert "AMX_INT8" not in sarai_llama.system_info()["features"]


def test_system_info_reports_kernels():
    sysinfo = sarai_llama.system_info()
    assert sysinfo["backends"] == ["CPU"]
    assert sysinfo["llama_commit"] == LLAMA_PIN.commit
    assert sysinfo["features"].get("OPENMP") == "1"
    if sarai_llama.build_info()["build_type"] == "native" and "avx2" in proc_flags():
        assert sysinfo["features"].get("AVX2") == "1"


def test_cpuid_probe_agrees_with_the_kernel():
    """The guard's CPUID view matches /proc/cpuinfo on real hardware (not under emulation)."""
    from sarai_llama import _cpuid

    found = _cpuid.features()
    if found is None:
        pytest.skip("not x86-64")
    mapped = set(write_build_info.X86_MACRO_TO_CPUINFO.values())
    assert set(found) <= mapped
    kernel = proc_flags() & mapped
    assert kernel <= set(found), "the kernel lists a feature CPUID does not report"
    assert set(found) - kernel <= set(bi.KERNEL_MAY_HIDE), "CPUID reports more than the kernel, for no known reason"
    assert {"sse", "sse2"} <= set(found)


def test_guard_reports_missing_features():
    info = {"build_type": "native", "isa_features": ["avx2", "avx512f", "sse2"]}
    assert bi.missing_features(info, {"sse2", "avx2"}) == ["avx512f"]
    assert bi.missing_features(info, {"sse2", "avx2", "avx512f"}) == []


def test_native_import_refuses_cpu_without_its_features():
    """A native build on a CPU that lacks one of its features: ImportError, not SIGILL."""
    info = sarai_llama.build_info()
    if info["build_type"] != "native" or not info["isa_features"]:
        pytest.skip("only a native build has features to refuse")
    hidden = "avx2" if "avx2" in info["isa_features"] else info["isa_features"][-1]
    code = "import sarai_llama"
    env = dict(os.environ, SARAI_HIDE_CPU_FLAGS=hidden)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert run.returncode == 1
    assert "BuildMismatchError" in run.stderr and hidden in run.stderr
    assert "make install-optimized" in run.stderr
    # and the guard ran before the extension was loaded
    code = "import sys\ntry:\n import sarai_llama\nexcept ImportError:\n pass\nprint('sarai_llama._core' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert run.stdout.strip() == "False"


def test_greedy_gemma_decode_is_right_and_repeatable(gemma_path):
    """Real Q4_K_M weights through the compiled core (the native build's AMX-crash check)."""
    llm = sarai_llama.Llama(str(gemma_path), n_ctx=256, verbose=False)
    prompt = "The Eiffel Tower is located in the city of"
    first = llm(prompt, max_tokens=5, temperature=0)
    llm.reset()
    second = llm(prompt, max_tokens=5, temperature=0)
    text = first["choices"][0]["text"]
    assert text.startswith(" Paris, France."), text
    assert second["choices"][0]["text"] == text
    assert first["usage"]["completion_tokens"] == 5
