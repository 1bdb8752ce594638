#!/usr/bin/env python3
"""The zero-compile wheels: built, repaired and checked one way, here and in CI.

    python tools/wheels.py build [--python PY ...]  # make wheel: one manylinux wheel per CPython into dist/
    python tools/wheels.py check WHEEL...           # the checks every published wheel passes
    python tools/wheels.py find [DIR]               # a wheel in DIR (dist/) this interpreter can install
    python tools/wheels.py hash FLAVOR              # the sources' hash (deploy/build.sh caches by it)

``build`` runs cibuildwheel with pyproject.toml's [tool.cibuildwheel], as the release
workflow does, on the sdist, with podman as its container engine and a local image
(tools/wheel_image.py: the host's CPythons, no network; the official manylinux images
cannot be pulled here). In the container the PyPI package ``ziglang`` (zig's clang, glibc
stubs and libc++) compiles for ``<arch>-linux-gnu.2.28`` (GLIBC_2.28 at most, whatever the
image's glibc); libc++ is linked statically into each library; ggml's threads run on LLVM's
OpenMP runtime from the PyPI package ``cmeel-libomp`` (zig ships none), which ``auditwheel
repair`` copies into the wheel, so the wheel needs nothing from the system but glibc
(tools/wheel_steps.py sets the toolchain up). docs/architecture.md ("Zero-compile wheels")
says why.

The wheels' link setting, ``-Wl,-Bsymbolic`` ([tool.cibuildwheel] config-settings): each
library uses its own copy of libc++. Without it, libllama bound the default-visibility inline
libc++ code that _core exports (loaded first) and freed _core's static locale data ("double
free" on the first model load). An exception thrown in one library then matches no catch of
std::exception in another (each copy has its own type_info), so code whose exceptions _core
catches is compiled into _core (CMakeLists.txt: llama.cpp's grammar parser and matcher).
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
import time
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
#: Libraries a wheel may take from the system: glibc's (every manylinux policy lists them).
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2",
               "ld-linux-aarch64.so.1"}
#: What goes into a wheel, this file's build settings included: the hash of these names a built
#: wheel, so an unchanged tree is not rebuilt.
SOURCES = ("src", "cmake", "CMakeLists.txt", "_build_backend", "pyproject.toml", "README.md", "LICENSE",
           "tools/wheels.py", "tools/wheel_steps.py", "tools/wheel_image.py", "tools/wheel_build.Containerfile")


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


#: What dist-info/licenses/ of every zero-compile wheel holds (CMakeLists.txt "licenses").
LICENSES = ("LICENSE", "llama.cpp-LICENSE", "nlohmann-json-LICENSE", "LLVM-LICENSE.txt")


def cache_dir(tag: str, sources: str) -> Path:
    """Where the repaired wheel for ``tag`` (cp311) of the sources hashed ``sources`` is kept."""
    return BUILD / f"{tag}-{sources}"


def sdist(sources: str) -> Path:
    """The sdist of these sources (build/wheel/sdist-<hash>/): cibuildwheel builds from it, as
    the release workflow does, so the container gets the sdist's files, not build/ or vendor/."""
    dest = BUILD / f"sdist-{sources}"
    found = list(dest.glob("sarai_llama-*.tar.gz"))
    if not found:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dest), str(ROOT)],
                       check=True, stdout=subprocess.DEVNULL)
        found = list(dest.glob("sarai_llama-*.tar.gz"))
    return found[0]


def cibuildwheel_env(versions: list[str], image: str, wheelhouse: Path) -> dict[str, str]:
    """What `make wheel` sets beyond [tool.cibuildwheel]: podman with no network, the local
    image, the CPythons asked for (a subset of the build selector) and the caches mounted.

    The wheelhouse stands in for PyPI (PIP_NO_INDEX); ccache's and zig's caches are the
    host's (CCACHE_DIR, ZIG_GLOBAL_CACHE_DIR: point them elsewhere for a cold build)."""
    ccache = Path(os.environ.get("CCACHE_DIR", Path.home() / ".cache" / "ccache"))
    zig = Path(os.environ.get("ZIG_GLOBAL_CACHE_DIR", Path.home() / ".cache" / "zig"))
    for cache in (ccache, zig):
        cache.mkdir(parents=True, exist_ok=True)
    create = ["--network=none", f"--volume={wheelhouse}:/wheelhouse:ro", "--env=PIP_NO_INDEX=1",
              "--env=PIP_FIND_LINKS=/wheelhouse", f"--volume={ccache}:/root/.cache/ccache",
              "--env=CCACHE_DIR=/root/.cache/ccache", f"--volume={zig}:/root/.cache/zig"]
    if "CCACHE_MAXSIZE" in os.environ:
        create.append(f"--env=CCACHE_MAXSIZE={os.environ['CCACHE_MAXSIZE']}")
    return {
        "CIBW_CONTAINER_ENGINE": f"podman; create_args: {' '.join(create)}; disable_host_mount: true",
        f"CIBW_MANYLINUX_{platform.machine().upper()}_IMAGE": image,
        "CIBW_ARCHS_LINUX": platform.machine(),
        "CIBW_BUILD": " ".join(f"cp{v.replace('.', '')}-*" for v in versions),
    }


def build(requested: list[str], out: Path) -> list[Path]:
    """One repaired, checked wheel per CPython in ``requested`` (X.Y or paths), copied into
    ``out``; cibuildwheel runs once for those not cached for these sources."""
    sys.path.insert(0, str(ROOT / "tools"))
    import wheel_image  # noqa: PLC0415 - needs the [wheel] extra

    # Hashed once: the sources may change while cibuildwheel runs (a shared checkout).
    sources = source_hash("manylinux")
    found, missing = interpreters(requested)
    if missing:
        log(f"no CPython {', '.join(missing)} on this machine: no wheel for {'it' if len(missing) == 1 else 'them'}")
    todo = sorted(v for v in found if not list(cache_dir("cp" + v.replace(".", ""), sources).glob("*.whl")))
    if todo:
        t0 = time.monotonic()
        source = sdist(sources)
        t1 = time.monotonic()
        # One image per machine: every CPython here, whichever this run builds for.
        everything = {**interpreters([])[0], **found}
        house = wheel_image.wheelhouse(everything)
        image = wheel_image.image(everything, house)
        t2 = time.monotonic()
        raw = BUILD / "cibuildwheel-out"
        shutil.rmtree(raw, ignore_errors=True)
        log(f"cibuildwheel for CPython {', '.join(todo)} in {image}")
        subprocess.run([sys.executable, "-m", "cibuildwheel", "--platform", "linux", "--output-dir", str(raw), str(source)],
                       check=True, env=dict(os.environ, **cibuildwheel_env(todo, image, house)))
        t3 = time.monotonic()
        log(f"times: sdist {t1 - t0:.0f} s, wheelhouse and image {t2 - t1:.0f} s, cibuildwheel {t3 - t2:.0f} s")
        for whl in raw.glob("sarai_llama-*.whl"):
            tag = whl.name.split("-")[2]
            for old in BUILD.glob(f"{tag}-*"):  # other sources' wheels: 57 MB each
                shutil.rmtree(old, ignore_errors=True)
            cache_dir(tag, sources).mkdir(parents=True)
            whl.rename(cache_dir(tag, sources) / whl.name)
        for old in BUILD.glob("sdist-*"):
            if old != source.parent:
                shutil.rmtree(old, ignore_errors=True)
    wheels = []
    out.mkdir(parents=True, exist_ok=True)
    for version in sorted(found):
        (whl,) = cache_dir("cp" + version.replace(".", ""), sources).glob("*.whl")
        shutil.copy2(whl, out / whl.name)
        wheels.append(out / whl.name)
    return wheels


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
        wheels = build(args.python, args.out)
        if not wheels:
            log("no supported CPython found")
            return 1
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
