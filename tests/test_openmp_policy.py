"""The OpenMP wait policy chosen before the core loads (_openmp.py), on recorded package trees."""

from __future__ import annotations

from pathlib import Path

from sarai_llama._openmp import choose_wait_policy


def _package(root: Path, libomp: bool) -> Path:
    pkg = root / "sarai_llama"
    pkg.mkdir(parents=True)
    if libomp:  # what auditwheel puts beside the package in the zero-compile wheel
        (root / "sarai_llama.libs").mkdir()
        (root / "sarai_llama.libs" / "libomp-f5435a0a.so").write_bytes(b"")
    return pkg


def test_the_wheels_libomp_waits_actively(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    got = choose_wait_policy(_package(tmp_path, libomp=True), env)
    assert env == {"OMP_WAIT_POLICY": "active"}
    assert got["runtime"] == "libomp" and got["policy"] == "active" and "yields" in got["reason"]


def test_gnu_openmp_builds_are_left_alone(tmp_path: Path) -> None:
    env = {"PATH": "/bin"}
    got = choose_wait_policy(_package(tmp_path, libomp=False), env)
    assert env == {"PATH": "/bin"} and got["policy"] == "default" and "GNU OpenMP" in got["reason"]


def test_the_users_setting_wins(tmp_path: Path) -> None:
    pkg = _package(tmp_path, libomp=True)
    for var, value in (("OMP_WAIT_POLICY", "passive"), ("KMP_BLOCKTIME", "0")):
        env = {var: value}
        got = choose_wait_policy(pkg, env)
        assert env == {var: value} and var in got["reason"]


def test_this_process_reports_its_policy() -> None:
    import sarai_llama

    info = sarai_llama.system_info()["openmp"]
    assert info == sarai_llama.OPENMP and set(info) == {"runtime", "policy", "reason"}
