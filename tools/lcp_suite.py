#!/usr/bin/env python3
"""Run llama-cpp-python's own test suite against sarai_llama: ``python tools/lcp_suite.py``.

The suite is the ``tests/`` folder of llama-cpp-python 0.3.36's PyPI sdist: the
same pinned, sha256-checked archive ``make vendor`` fills ``vendor/llama.cpp``
from (``tools/vendor.py``'s pin and cache, so nothing is downloaded twice). Its
tests run unchanged with ``tools/lcp_suite/conftest.py``: ``llama_cpp`` is
sarai_llama through ``sarai_llama.compat.install()``, and the model downloads
point at local models of the same kind (else the test is skipped, saying so).
The working directory is the repository root, so the suite's
``./vendor/llama.cpp/models`` vocabularies are the vendored ones.

Prints one line per test (passed / failed / skipped, with the reason) and exits
1 when a test fails that ``tools/lcp_suite/allowlist.txt`` does not list (each
entry there says why that failure is accepted). Allow-listed tests that pass
are reported, so the list stays short.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "lcp_suite"
sys.path.insert(0, str(ROOT / "tools"))

import vendor

PIN = vendor.PINS["llama.cpp"]  # llama-cpp-python 0.3.36's sdist
TESTS_IN_ARCHIVE = "llama_cpp_python-0.3.36/tests/"


def load_allowlist(path: Path) -> dict[str, str]:
    """``test id | reason`` lines (``#`` comments); a reason is required."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if not line:
            continue
        test, sep, reason = (part.strip() for part in line.partition("|"))
        if not sep or not reason:
            raise SystemExit(f"{path}:{n}: expected 'test id | reason'")
        out[test] = reason
    return out


def extract_tests(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith(TESTS_IN_ARCHIVE) and member.isfile() and member.name.endswith(".py"):
                name = member.name[len(TESTS_IN_ARCHIVE):]
                if "/" in name or name.startswith("."):
                    continue  # only the top-level test files, never a path outside dest
                src = tar.extractfile(member)
                assert src is not None
                (dest / name).write_bytes(src.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allowlist", type=Path, default=HERE / "allowlist.txt")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k seed)")
    args = parser.parse_args(argv)
    allow = load_allowlist(args.allowlist)
    archive = vendor.download(PIN)
    with tempfile.TemporaryDirectory(prefix="lcp-suite-") as tmp:
        suite = Path(tmp) / "tests"
        suite.mkdir()
        extract_tests(archive, suite)
        (suite / "conftest.py").write_bytes((HERE / "conftest.py").read_bytes())
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")  # not this repository's settings
        report = Path(tmp) / "report.json"
        env = dict(os.environ, LCP_SUITE_REPORT=str(report))
        cmd = [sys.executable, "-m", "pytest", "-c", str(Path(tmp) / "pytest.ini"), "--rootdir", tmp,
               "-p", "no:cacheprovider", "--continue-on-collection-errors", "-q", "--tb=short", str(suite), *args.pytest_args]
        print("[lcp-suite] " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        if not report.exists():
            print(f"[lcp-suite] pytest ended ({proc.returncode}) without a report", file=sys.stderr)
            return 1
        results = json.loads(report.read_text())
    return summarize(results, allow)


def summarize(results: dict[str, dict[str, str]], allow: dict[str, str]) -> int:
    def short(nodeid: str) -> str:
        return nodeid.split("/")[-1]

    width = max((len(short(k)) for k in results), default=10)
    bad, stale = [], []
    print(f"\n{'test':<{width}}  result   detail")
    for nodeid, r in sorted(results.items()):
        name, outcome, detail = short(nodeid), r["outcome"], r["detail"]
        if outcome == "failed":
            if name in allow:
                outcome, detail = "allowed", f"{allow[name]} [{detail}]"
            else:
                bad.append(name)
        elif outcome == "passed" and name in allow:
            stale.append(name)
        print(f"{name:<{width}}  {outcome:<7}  {detail}")
    counts = {k: sum(1 for r in results.values() if r["outcome"] == k) for k in ("passed", "failed", "skipped")}
    print(f"\n[lcp-suite] {counts['passed']} passed, {counts['failed']} failed "
          f"({counts['failed'] - len(bad)} allow-listed), {counts['skipped']} skipped")
    for name in stale:
        print(f"[lcp-suite] {name} passes now: remove it from the allow-list")
    if bad:
        print(f"[lcp-suite] FAILED (not allow-listed): {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
