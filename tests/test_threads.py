"""CPU facts and thread policy: real kernel interfaces where the machine allows, recorded trees otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sarai_llama import cgroup, cpu, threads

from conftest import write_tree


def sysfs_cpus(core_ids: list[tuple[int, int]]) -> dict[str, str]:
    files = {}
    for cpu_id, (pkg, core) in enumerate(core_ids):
        files[f"sys/devices/system/cpu/cpu{cpu_id}/topology/physical_package_id"] = f"{pkg}\n"
        files[f"sys/devices/system/cpu/cpu{cpu_id}/topology/core_id"] = f"{core}\n"
    return files


def test_parse_cpu_list():
    assert cpu.parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu.parse_cpu_list("") == set()


def test_hybrid_12700k_counts_p_cores(tmp_path):
    # i7-12700K: 8 P-cores with SMT (CPUs 0-15, siblings share a core id) + 4 E-cores (16-19).
    cores = [(0, c // 2 * 4) for c in range(16)] + [(0, 32 + i) for i in range(4)]
    root = write_tree(tmp_path, {**sysfs_cpus(cores), "sys/devices/cpu_atom/cpus": "16-19\n",
                                 "proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": "max 100000\n"})
    topo = cpu.topology(root)
    all_cpus = set(range(20))
    assert topo.physical_cores(all_cpus) == 12
    assert topo.performance_cores(all_cpus) == 8
    n, why = cpu.usable_cpus(root, all_cpus)
    assert n == 8 and "P-cores" in why


def test_smt_counts_physical_cores(tmp_path):
    # 7950X: 16 cores, 32 threads (sibling n and n+16 share a core).
    cores = [(0, c % 16) for c in range(32)]
    root = write_tree(tmp_path, {**sysfs_cpus(cores), "proc/self/cgroup": "0::/\n"})
    assert cpu.usable_cpus(root, set(range(32)))[0] == 16
    assert cpu.usable_cpus(root, {0, 16})[0] == 1  # two siblings of one core


def test_cgroup_v2_quota(tmp_path):
    cores = [(0, c) for c in range(16)]
    root = write_tree(tmp_path, {
        **sysfs_cpus(cores),
        "proc/self/cgroup": "0::/kubepods/pod1/ctr\n",
        "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "250000 100000\n",
        "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "max 100000\n",
    })
    assert cpu.cgroup_cpu_quota(root) == 2.5
    n, why = cpu.usable_cpus(root, set(range(16)))
    assert n == 2 and "quota" in why


def test_cgroup_v1_quota(tmp_path):
    root = write_tree(tmp_path, {
        **sysfs_cpus([(0, c) for c in range(8)]),
        "proc/self/cgroup": "12:cpu,cpuacct:/docker/abc\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
        "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    })
    assert cpu.cgroup_cpu_quota(root) == 1.5
    assert cpu.usable_cpus(root, set(range(8)))[0] == 1


def test_tiny_quota_still_gives_one_thread(tmp_path):
    root = write_tree(tmp_path, {**sysfs_cpus([(0, 0), (0, 1)]), "proc/self/cgroup": "0::/x\n",
                                 "sys/fs/cgroup/x/cpu.max": "20000 100000\n"})
    assert cpu.usable_cpus(root, {0, 1})[0] == 1


@pytest.mark.parametrize("usable, mode, expected", [
    (16, "max", 16), (16, "balanced", 12), (16, "low", 8), (16, "single", 1), (4, "balanced", 3), (1, "low", 1),
])
def test_mode_arithmetic(usable, mode, expected):
    assert threads._scaled(usable, mode) == expected


def test_bad_mode():
    with pytest.raises(ValueError):
        threads.optimal_threads("turbo")


def test_env_policy(monkeypatch):
    usable = cpu.usable_cpus()[0]
    monkeypatch.setenv("SARAI_THREAD_MODE", "auto")
    monkeypatch.setenv("CODING_THREADS", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.get_optimal_threads("coding") == 1
    # More than this process may use (a ConfigMap's 16 in an 8-CPU pod) is cut to the usable CPUs.
    monkeypatch.setenv("CODING_THREADS", str(usable + 6))
    n, why, cuts = threads.explain_job_threads("coding")
    assert n == usable and f"cut to {usable}" in why
    assert cuts == [f"CODING_THREADS={usable + 6} exceeds the {usable} usable CPUs ({cpu.usable_cpus()[1]}): "
                    f"coding jobs get {usable}"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.get_optimal_threads("coding") == 1
    monkeypatch.setenv("SARAI_THREAD_MODE", "single")
    assert threads.get_optimal_threads("coding") == 1
    monkeypatch.setenv("SARAI_THREAD_MODE", "auto")
    monkeypatch.setenv("CODING_THREADS", "many")
    with pytest.raises(ValueError):
        threads.get_optimal_threads("coding")


DETECT = "import json; from sarai_llama import cpu, threads; print(json.dumps([cpu.usable_cpus(), threads.optimal_threads('max')]))"


def test_taskset_limits_threads():
    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed (apt-get install util-linux)")
    run = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", DETECT], capture_output=True, text=True, check=True)
    (usable, why), n = json.loads(run.stdout)
    assert usable == 1 and n == 1 and "affinity" in why


def _new_cpu_cgroup() -> tuple[Path, str]:
    """Create a cgroup with a 1-CPU quota (v2 or v1 cpu controller); skip where impossible."""
    if len(cpu.affinity()) < 2:
        pytest.skip("needs at least 2 CPUs to tell a quota from the core count")
    v2, v1 = cgroup.mounts(Path("/"), "cpu")
    name = f"sarai-test-{uuid.uuid4().hex[:8]}"
    for mount, _ in v2:
        controllers = mount / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            try:
                (mount / name).mkdir()
                (mount / name / "cpu.max").write_text("100000 100000\n")
                return mount / name, "v2"
            except OSError:
                continue
    for mount, _ in v1:
        try:
            (mount / name).mkdir()
            (mount / name / "cpu.cfs_period_us").write_text("100000\n")
            (mount / name / "cpu.cfs_quota_us").write_text("100000\n")
            return mount / name, "v1"
        except OSError:
            continue
    pytest.skip("cannot create a cgroup with a CPU quota here (not root, or cgroupfs read-only)")


def test_real_cgroup_quota():
    """Inside a real cgroup with a 1-CPU quota, where this machine lets us create one."""
    group, version = _new_cpu_cgroup()
    try:
        script = f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -c \"{DETECT}\""
        run = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
        if run.returncode != 0 and "cgroup.procs" in run.stderr:
            pytest.skip(f"cannot move a process into the {version} cgroup: {run.stderr.strip()}")
        assert run.returncode == 0, run.stderr
        (usable, why), n = json.loads(run.stdout)
        assert usable == 1 and n == 1 and "quota" in why
    finally:
        group.rmdir()


def test_cli_info_and_doctor_json():
    info = subprocess.run([sys.executable, "-m", "sarai_llama", "info", "--json"], capture_output=True, text=True,
                          check=True, cwd="/")
    report = json.loads(info.stdout)
    assert report["build"]["build_type"] in ("native", "portable")
    assert report["threads"]["value"] >= 1 and report["threads"]["reason"]
    assert report["system"]["cpu_variant"]
    doctor = subprocess.run([sys.executable, "-m", "sarai_llama", "doctor", "--json"], capture_output=True, text=True,
                            cwd="/")
    assert doctor.returncode in (0, 1)
    assert json.loads(doctor.stdout)["ok"] is (doctor.returncode == 0)


def test_cli_doctor_says_when_job_threads_are_cut():
    usable = cpu.usable_cpus()[0]
    env = {**os.environ, "SARAI_THREAD_MODE": "auto", "CODING_THREADS": str(usable + 14), "MARKETING_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    doctor = subprocess.run([sys.executable, "-m", "sarai_llama", "doctor", "--json"], capture_output=True,
                            text=True, cwd="/", env=env)
    notes = json.loads(doctor.stdout)["notes"]
    assert any(n.startswith(f"CODING_THREADS={usable + 14} exceeds the {usable} usable CPUs") for n in notes), notes
    assert not any("MARKETING_THREADS" in n for n in notes)


def test_cli_run_default_model(gemma_path):
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "run", "The Eiffel Tower is located in the city of",
                          "-n", "3", "--temperature", "0"], capture_output=True, text=True, cwd="/", timeout=300)
    assert run.returncode == 0, run.stderr[-1000:]
    assert "Paris" in run.stdout


def test_cli_bad_model_is_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "sarai_llama", "run", str(tmp_path / "missing.gguf"), "hi"],
                         capture_output=True, text=True, cwd="/")
    assert run.returncode == 2 and "error" in run.stderr
