#!/usr/bin/env python3
"""Fill ``vendor/`` with the pinned third-party sources: ``python tools/vendor.py``.

The pins live in git as submodule gitlinks. Where GitHub is reachable,
``git submodule update --init`` fetches them. These build machines cannot reach
GitHub, so each submodule also has an offline source that is published,
pinned and sha256-verified:

* ``vendor/llama.cpp``: the PyPI sdist of llama-cpp-python 0.3.36. It ships the
  submodule's shallow git metadata, which lets us prove that its files are exactly
  the pinned commit (``git diff --quiet`` against that commit's tree).
* ``vendor/OpenBLAS``: Debian bookworm's ``openblas`` source package, whose
  upstream tarball is OpenBLAS 0.3.21 without ``lapack-netlib``. It is fetched
  with ``apt-get source`` against a private, temporary deb-src list so the
  machine's apt configuration is never touched.

Every download is hashed before use, every tree is extracted into a temporary
directory beside its destination and moved into place with one ``rename``, so
an interrupted run leaves either the old state or the new one. A second run
does nothing. The result is recorded in ``vendor/<name>/.sarai-vendor.json``,
which the build reads (the sdist has no git metadata) and ships.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "vendor"
RECORD_NAME = ".sarai-vendor.json"


@dataclass(frozen=True)
class Pin:
    name: str
    commit: str
    version: str
    offline_kind: str  # "pypi-sdist" or "debian-source"
    offline_url: str
    offline_file: str
    sha256: str
    #: path inside the offline archive whose content is the submodule's tree
    archive_subdir: str


PINS = {
    "llama.cpp": Pin(
        name="llama.cpp",
        commit="0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        version="b11312",  # the release tag of this commit (llama.cpp builds are numbered b<N>)
        offline_kind="pypi-sdist",
        offline_url=(
            "https://files.pythonhosted.org/packages/ec/e9/"
            "e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
            "llama_cpp_python-0.3.36.tar.gz"
        ),
        offline_file="llama_cpp_python-0.3.36.tar.gz",
        sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
        archive_subdir="llama_cpp_python-0.3.36/vendor/llama.cpp",
    ),
    "OpenBLAS": Pin(
        name="OpenBLAS",
        commit="b89fb708caa5a5a32de8f4306c4ff132e0228e9a",
        version="0.3.21",
        offline_kind="debian-source",
        offline_url="openblas=0.3.21+ds-4 (Debian bookworm)",
        offline_file="openblas_0.3.21+ds.orig.tar.xz",
        sha256="bbec5cca61c8033b2d57aaecde205d709323a0b35a5f193290081dbb3826848a",
        archive_subdir="OpenBLAS-0.3.21",
    ),
}

DEBIAN_SRC_LINE = (
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian {suite} main\n"
)
CACHE = Path(os.environ.get("SARAI_VENDOR_CACHE", Path.home() / ".cache" / "sarai-llama" / "vendor"))


class VendorError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[vendor] {msg}", flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gitlink_commit(path: str) -> str | None:
    """The commit the superproject pins for ``path``, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "HEAD", path],
            capture_output=True, text=True, check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out[2] if len(out) >= 3 and out[1] == "commit" else None


def read_record(dest: Path) -> dict | None:
    try:
        return json.loads((dest / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_filled(pin: Pin) -> bool:
    dest = VENDOR / pin.name
    record = read_record(dest)
    return bool(record and record.get("commit") == pin.commit and (dest / "CMakeLists.txt").exists())


def write_record(dest: Path, pin: Pin, source: str) -> None:
    record = {
        "name": pin.name,
        "commit": pin.commit,
        "version": pin.version,
        "source": source,
    }
    if source != "git-submodule":
        record.update({"archive": pin.offline_file, "archive_url": pin.offline_url, "sha256": pin.sha256})
    (dest / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")


def try_submodule(pin: Pin) -> bool:
    """Fetch with git where GitHub answers; a short timeout keeps offline machines quick."""
    if os.environ.get("SARAI_VENDOR_OFFLINE") or not (ROOT / ".git").exists():
        return False
    log(f"{pin.name}: trying git submodule update")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        subprocess.run(
            ["git", "-C", str(ROOT), "-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=10",
             "submodule", "update", "--init", "--depth", "1", "--", f"vendor/{pin.name}"],
            check=True, timeout=60, env=env, capture_output=True,
        )
    except (OSError, subprocess.SubprocessError):
        log(f"{pin.name}: git submodule update failed; using the offline source")
        return False
    write_record(VENDOR / pin.name, pin, "git-submodule")
    return True


def download(pin: Pin) -> Path:
    """Return a verified copy of the pin's offline archive, from the cache or the network."""
    if pin.offline_kind == "debian-source":
        return debian_source("openblas", "bookworm", pin.offline_file, pin.sha256)
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / pin.offline_file
    if target.exists() and sha256_of(target) == pin.sha256:
        log(f"{pin.name}: using cached {target.name}")
        return target
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        got = Path(tmp) / pin.offline_file
        log(f"{pin.name}: downloading {pin.offline_url}")
        with urllib.request.urlopen(pin.offline_url, timeout=120) as resp, got.open("wb") as out:
            shutil.copyfileobj(resp, out)
        actual = sha256_of(got)
        if actual != pin.sha256:
            raise VendorError(f"{pin.name}: sha256 mismatch for {pin.offline_file}: expected {pin.sha256}, got {actual}")
        os.replace(got, target)
    return target


def apt_source_download(workdir: Path, package: str, suite: str) -> None:
    """``apt-get source --download-only PACKAGE/SUITE`` into ``workdir``.

    A private sources list and state directory make this independent of the
    machine's own apt configuration and release (Debian 12 or 13).
    """
    state = workdir / "apt"
    (state / "lists" / "partial").mkdir(parents=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True)
    (state / "sources.list").write_text(DEBIAN_SRC_LINE.format(suite=suite))
    opts = [
        "-q", "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]
    log(f"apt-get source {package} ({suite})")
    try:
        subprocess.run(["apt-get", *opts, "update"], check=True, capture_output=True, timeout=300)
        subprocess.run(["apt-get", *opts, "source", "--download-only", f"{package}/{suite}"],
                       check=True, cwd=workdir, capture_output=True, timeout=600)
    except FileNotFoundError as exc:
        raise VendorError(f"apt-get is needed to fetch {package} offline (Debian's source package)") from exc
    except subprocess.CalledProcessError as exc:
        raise VendorError(f"apt-get failed: {exc.stderr.decode(errors='replace')[-2000:]}") from exc


def debian_source(package: str, suite: str, file: str, sha256: str) -> Path:
    """A verified copy of ``file`` (an upstream tarball) from Debian's source package
    ``package`` in ``suite``, kept in the download cache: tools/wheel.py's CPython source."""
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / file
    if target.exists() and sha256_of(target) == sha256:
        return target
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        apt_source_download(Path(tmp), package, suite)
        got = Path(tmp) / file
        if not got.exists():
            raise VendorError(f"{package}: {file} was not downloaded")
        actual = sha256_of(got)
        if actual != sha256:
            raise VendorError(f"{package}: sha256 mismatch for {file}: expected {sha256}, got {actual}")
        os.replace(got, target)
    return target


def safe_members(tar: tarfile.TarFile, prefix: str) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        if not (member.name == prefix or member.name.startswith(prefix + "/")):
            continue
        if member.name.startswith("/") or ".." in Path(member.name).parts:
            raise VendorError(f"refusing unsafe path in archive: {member.name}")
        members.append(member)
    return members


def verify_llama_tree(extracted_root: Path, pin: Pin) -> None:
    """Prove that the sdist's llama.cpp files are the pinned commit, using its own git metadata."""
    gitdir = extracted_root / "llama_cpp_python-0.3.36" / ".git" / "modules" / "vendor" / "llama.cpp"
    tree = extracted_root / pin.archive_subdir
    head = (gitdir / "HEAD").read_text().strip()
    if head != pin.commit:
        raise VendorError(f"llama.cpp in the sdist is {head}, expected {pin.commit}")
    git = ["git", f"--git-dir={gitdir}", f"--work-tree={tree}", "-c", "core.fileMode=false"]
    subprocess.run([*git, "update-index", "-q", "--refresh"], capture_output=True)
    diff = subprocess.run([*git, "diff", "--quiet", pin.commit, "--"], capture_output=True)
    if diff.returncode != 0:
        raise VendorError("llama.cpp files in the sdist differ from the pinned commit")
    log(f"llama.cpp: files verified against commit {pin.commit}")


def extract(pin: Pin, archive: Path) -> None:
    dest = VENDOR / pin.name
    VENDOR.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{pin.name}-", dir=VENDOR))
    try:
        log(f"{pin.name}: extracting {archive.name}")
        mode = "r:gz" if archive.name.endswith(".gz") else "r:xz"
        with tarfile.open(archive, mode) as tar:
            wanted = pin.archive_subdir.split("/")[0]
            members = safe_members(tar, wanted)
            if hasattr(tarfile, "tar_filter"):
                tar.extractall(staging, members=members, filter="tar")
            else:  # Python < 3.10.12 has no filters; safe_members already checked the paths
                tar.extractall(staging, members=members)
        if pin.name == "llama.cpp":
            verify_llama_tree(staging, pin)
        tree = staging / pin.archive_subdir
        for gitfile in (tree / ".git",):
            if gitfile.is_file() or gitfile.is_symlink():
                gitfile.unlink()
        write_record(tree, pin, pin.offline_kind)
        # An uninitialised submodule is an empty directory; a stale tree is moved
        # aside first so the final rename is the only step that makes it visible.
        old = None
        if dest.exists():
            old = staging / "old"
            os.replace(dest, old)
        os.replace(tree, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{pin.name}: ready at {dest.relative_to(ROOT)}")


def fill(pin: Pin) -> None:
    pinned = gitlink_commit(f"vendor/{pin.name}")
    if pinned is not None and pinned != pin.commit:
        raise VendorError(
            f"vendor/{pin.name} is pinned at {pinned} in git but tools/vendor.py knows {pin.commit}: "
            "update PINS together with the gitlink"
        )
    if is_filled(pin):
        log(f"{pin.name}: already at {pin.commit[:12]}")
        return
    if try_submodule(pin):
        return
    extract(pin, download(pin))


def clean(pin: Pin) -> None:
    """Empty ``vendor/<name>`` again, as an uninitialised submodule is (the cache stays)."""
    dest = VENDOR / pin.name
    if dest.exists() and any(dest.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{pin.name}-old-", dir=VENDOR))
        os.replace(dest, aside / "tree")  # one rename: vendor/ never holds half a tree
        dest.mkdir()
        shutil.rmtree(aside)
        log(f"{pin.name}: emptied (make vendor fills it again from the cache)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"which sources, of {', '.join(PINS)} (default: all)")
    parser.add_argument("--check", action="store_true", help="only report whether vendor/ is filled")
    parser.add_argument("--clean", action="store_true", help="empty the submodule folders again")
    args = parser.parse_args(argv)
    names = args.names or list(PINS)
    unknown = [n for n in names if n not in PINS]
    if unknown:
        parser.error(f"unknown source(s): {', '.join(unknown)}")
    if args.clean:
        for n in names:
            clean(PINS[n])
        return 0
    if args.check:
        missing = [n for n in names if not is_filled(PINS[n])]
        for n in names:
            log(f"{n}: {'missing' if n in missing else 'ok'}")
        return 1 if missing else 0
    try:
        for name in names:
            fill(PINS[name])
    except VendorError as exc:
        print(f"[vendor] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
