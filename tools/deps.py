"""Install the Python packages a job needs, as pyproject.toml declares them (one definition).

    python tools/deps.py build          # [build-system].requires + cmake, ninja: what
                                        # `pip install --no-build-isolation .` needs
    python tools/deps.py sdist          # ... + pypa/build, for `make sdist`
    python tools/deps.py build test     # ... + the [test] and [plot] extras (the test suite)
    python tools/deps.py --upgrade ...  # newest releases even where one is installed (CI)

Without --upgrade only what is missing or too old is installed, so running it
before every incremental build costs a fraction of a second. Needs nothing but
the standard library and pip.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

try:  # packaging comes with pip (vendored) even in a fresh virtual environment
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - depends on the environment
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

# scikit-build-core fetches cmake and ninja itself only inside an isolated
# build; --no-build-isolation builds (our incremental ones) need them here.
BUILD_TOOLS = ["cmake>=3.21", "ninja>=1.10"]
# The suite also builds sdists (pypa/build) and plots (the [plot] extra).
TEST_TOOLS = ["build"]


def requirements(groups: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"].get("optional-dependencies", {})
    out: list[str] = []
    for group in groups:
        if group == "build":
            out += project["build-system"]["requires"] + BUILD_TOOLS
        elif group == "sdist":
            out += project["build-system"]["requires"] + BUILD_TOOLS + ["build"]
        elif group == "test":
            out += project["project"]["dependencies"] + extras["test"] + extras.get("plot", []) + TEST_TOOLS
        elif group in extras:
            out += extras[group]
        else:
            raise SystemExit(f"unknown group {group!r}: build, sdist, test or an extra of pyproject.toml")
    return list(dict.fromkeys(out))


def missing(reqs: list[str]) -> list[str]:
    """The requirements that no installed distribution satisfies."""
    out = []
    for text in reqs:
        req = Requirement(text)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            out.append(text)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(text)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="+", help="build, sdist, test, or an extra of pyproject.toml")
    ap.add_argument("--upgrade", action="store_true", help="install the newest releases of all of them")
    ap.add_argument("--check", action="store_true", help="only list what is missing (exit 1 if anything is)")
    args = ap.parse_args(argv)
    reqs = requirements(args.groups)
    todo = reqs if args.upgrade else missing(reqs)
    if args.check:
        print("\n".join(todo))
        return 1 if todo else 0
    if not todo:
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "-q", *(["--upgrade"] if args.upgrade else []), *todo]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
