"""deploy/: the Kubernetes manifests (rendered with kustomize, validated offline) and the
server image (built by `make image`, run with podman, played as the stable overlay).

The manifest tests are fast. The image tests are slow: the first builds the image
(minutes on a fresh machine: the portable wheel; seconds once build/deploy/ caches it)
and all of them share it and one running container.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import k8s_validate  # noqa: E402
from conftest import free_port  # noqa: E402

IMAGE = "localhost/sarai-llama:zero-compile"
# uvicorn's graceful-shutdown allowance after the drain (server/app.py: timeout_graceful_shutdown=5).
UVICORN_SHUTDOWN_S = 5


def docs(text: str) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason="python tools/deps.py deploy")
    return [d for d in yaml.safe_load_all(text) if d]


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


# ------------------------------------------------------------------------------ manifests
@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    for name in ("kubectl", "kubernetes-validate"):
        try:
            k8s_validate.tool(name)
        except SystemExit:
            pytest.skip(f"{name} is not installed: python tools/deps.py deploy")
    return k8s_validate.targets(tmp_path_factory.mktemp("k8s"))


def test_manifests_validate_offline(rendered: dict[str, str], tmp_path: Path) -> None:
    files = [p for p in (ROOT / "deploy/k8s/base").glob("*.yaml") if p.name != "kustomization.yaml"]
    for name, text in rendered.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        files.append(tmp_path / f"{name}.yaml")
    assert {"base", "overlay-stable", "overlay-research", "overlay-stable+hpa-cpu"} <= set(rendered)
    run = k8s_validate.validate(files, "1.30.0")
    assert run.returncode == 0, run.stdout + run.stderr


def test_validation_rejects_a_wrong_manifest(rendered: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(rendered["overlay-stable"].replace("terminationGracePeriodSeconds:", "terminationGracePeriod:"))
    run = k8s_validate.validate([bad], "1.30.0")
    assert run.returncode != 0 and "terminationGracePeriod" in run.stdout + run.stderr


def test_overlays_are_the_designs_deployments(rendered: dict[str, str]) -> None:
    stable, research = docs(rendered["overlay-stable"]), docs(rendered["overlay-research"])
    for resources, replicas, tag, requests, limits in (
        (stable, 3, "zero-compile", {"cpu": "6", "memory": "12Gi"}, {"cpu": "8", "memory": "14Gi"}),
        (research, 1, "native-blas", {"cpu": "15", "memory": "12Gi"}, {"cpu": "16", "memory": "14Gi"}),
    ):
        dep = one(resources, "Deployment")
        (ctr,) = dep["spec"]["template"]["spec"]["containers"]
        assert dep["spec"]["replicas"] == replicas and ctr["image"].endswith(":" + tag)
        assert ctr["resources"] == {"requests": requests, "limits": limits}
        config = one(resources, "ConfigMap")["data"]
        assert {k: config[k] for k in ("SARAI_THREAD_MODE", "MARKETING_THREADS", "CODING_THREADS",
                                        "RESEARCH_THREADS")} == {"SARAI_THREAD_MODE": "auto", "MARKETING_THREADS": "8",
                                                                 "CODING_THREADS": "16", "RESEARCH_THREADS": "16"}
        # No thread count that fights the CPU quota: none fixed in the pod, and the job's own count fits the limit.
        assert "OMP_NUM_THREADS" not in config and all(e["name"] != "OMP_NUM_THREADS" for e in ctr.get("env", []))
        assert config["SARAI_THREADS"] == "auto"
        assert int(config[config["SARAI_JOB"].upper() + "_THREADS"]) <= int(limits["cpu"])
        assert one(resources, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert one(research, "Deployment")["spec"]["template"]["spec"]["nodeSelector"] == {"node-type": "high-performance"}
    hpa = one(stable, "HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "llamacpp:requests_deferred"
    assert not [r for r in research if r["kind"] == "HorizontalPodAutoscaler"]
    cpu_hpa = one(docs(rendered["overlay-stable+hpa-cpu"]), "HorizontalPodAutoscaler")["spec"]
    assert cpu_hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_probes_grace_and_security_fit_the_server(rendered: dict[str, str]) -> None:
    for overlay in ("overlay-stable", "overlay-research"):
        resources = docs(rendered[overlay])
        pod = one(resources, "Deployment")["spec"]["template"]["spec"]
        (ctr,) = pod["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert ctr[probe]["httpGet"] == {"path": "/health", "port": "http"}
        pre_stop = ctr["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        drain = float(one(resources, "ConfigMap")["data"]["SARAI_DRAIN_TIMEOUT"])
        # The kubelet's SIGKILL must come after preStop + the whole drain + uvicorn's shutdown.
        assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain + UVICORN_SHUTDOWN_S
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"]


# ------------------------------------------------------------------------------ the image
def podman_recommends() -> str:
    """The Recommends field of podman: the installed package's, else the candidate apt would install."""
    for cmd in (["dpkg-query", "-W", "-f=${Recommends}", "podman"], ["apt-cache", "show", "--no-all-versions", "podman"]):
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            continue
        if run.returncode != 0 or not run.stdout.strip():
            continue
        if cmd[0] == "dpkg-query":
            return run.stdout
        for line in run.stdout.splitlines():
            if line.startswith("Recommends:"):
                return line.split(":", 1)[1]
        return ""
    pytest.skip("no Debian package database here: tools/podman_setup.sh installs with apt-get")


def test_podman_setup_decides_each_thing_podman_recommends() -> None:
    """podman is installed without its Recommends, so the setup script must name each one it
    needs (catatonit: `kube play` fails without it) and give a reason for each it leaves out.
    Checked against the machine's own podman package, so a Debian release that recommends
    something new fails here, not in a container test on a fresh machine."""
    decided = subprocess.run(["bash", str(ROOT / "tools/podman_setup.sh"), "--packages"], capture_output=True,
                             text=True, check=True).stdout.split("\n")
    install = {line.split()[1] for line in decided if line.startswith("install ")}
    skip = {line.split()[1] for line in decided if line.startswith("skip ")}
    assert {"podman", "runc", "catatonit"} <= install and not install & skip
    # "a (>= 1), b | c" -> [[a], [b, c]]: one group per Recommends, alternatives inside it.
    groups = [[alt.split("(")[0].split(":")[0].strip() for alt in group.split("|")]
              for group in podman_recommends().split(",") if group.strip()]
    assert groups, "podman recommends nothing: the parse above is broken"
    undecided = [name for group in groups for name in group if name not in install | skip]
    assert not undecided, f"podman recommends {undecided}: install them in tools/podman_setup.sh or say why not"
    for group in groups:  # of alternatives, the script installs one or says why none is needed
        assert set(group) & install or set(group) <= skip, group


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, f"podman {' '.join(args)}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
    return run


def wait_healthy(url: str, name: str, timeout: float = 180) -> list[int]:
    """Poll /health until 200; the status codes seen on the way (503 while the model loads)."""
    import httpx

    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code = httpx.get(url + "/health", timeout=2).status_code
            if not seen or seen[-1] != code:
                seen.append(code)
            if code == 200:
                return seen
        except httpx.HTTPError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout.strip()
        assert state in ("running", "created", "configured", ""), podman("logs", name, check=False).stderr[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{name} not healthy after {timeout} s:\n{podman('logs', name, check=False).stderr[-3000:]}")


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None and os.geteuid() != 0:
        pytest.skip("podman is not installed: sudo bash tools/podman_setup.sh")
    run = subprocess.run(["make", "-C", str(ROOT), "image", f"PYTHON={sys.executable}"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return IMAGE


class Container:
    """One `podman run` of the image with the Gemma model mounted, published on 127.0.0.1."""

    def __init__(self, image: str, model: Path, *args: str) -> None:
        self.name = f"sarai-test-{os.getpid()}-{free_port()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        podman("run", "-d", "--name", self.name, "--read-only", "--cap-drop", "all",
               "--security-opt", "no-new-privileges", "-p", f"127.0.0.1:{self.port}:8080",
               "-v", f"{model}:/models/model.gguf:ro", *args, image)

    def exec(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *cmd)

    def remove(self) -> None:
        podman("rm", "-f", "-v", "-t", "0", self.name, check=False)


@pytest.fixture(scope="module")
def container(image: str, gemma_path: Path) -> Iterator[Container]:
    pytest.importorskip("httpx", reason="pip install sarai-llama[test]")
    c = Container(image, gemma_path, "--cpus", "1")
    try:
        c.health_codes = wait_healthy(c.url, c.name)  # type: ignore[attr-defined]
        yield c
    finally:
        c.remove()


@pytest.mark.slow
def test_image_is_non_root_with_tini_and_no_model(image: str) -> None:
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspect["Config"]
    assert config["User"].split(":")[0] == "10001"
    assert config["Entrypoint"][:3] == ["/usr/bin/tini", "--", "sarai-llama"]
    assert "/health" in " ".join(inspect["Healthcheck"]["Test"])
    listing = podman("run", "--rm", "--network", "none", "--entrypoint", "ls", image, "-A", "/models").stdout
    assert listing.strip() == ""


@pytest.mark.slow
def test_container_serves_with_the_quota_s_threads(container: Container) -> None:
    import httpx

    assert container.health_codes[-1] == 200  # type: ignore[attr-defined]
    chat = httpx.post(container.url + "/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16, "temperature": 0})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] and chat.json()["usage"]["completion_tokens"] == 16
    out = httpx.post(container.url + "/v1/completions", timeout=120, json={
        "prompt": "The Eiffel Tower is located in the city of", "max_tokens": 4, "temperature": 0})
    assert out.json()["choices"][0]["text"].strip().startswith("Paris"), out.text
    info = json.loads(container.exec("sarai-llama", "info", "--json").stdout)
    assert info["threads"]["value"] == 1 and "quota" in info["threads"]["reason"], info["threads"]
    assert container.exec("id", "-u").stdout.strip() == "10001"
    assert podman("exec", container.name, "touch", "/opt/x", check=False).returncode != 0  # read-only root


@pytest.mark.slow
def test_sigterm_drains_an_open_stream_and_exits_0(image: str, gemma_path: Path) -> None:
    import httpx

    c = Container(image, gemma_path, "--cpus", "1", "-e", "SARAI_DRAIN_TIMEOUT=30")
    try:
        wait_healthy(c.url, c.name)
        body = {"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": True,
                "ignore_eos": True}
        chunks: list[dict[str, Any]] = []
        with httpx.stream("POST", c.url + "/v1/completions", json=body, timeout=120) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[6:]))
                    break
            t_term = time.monotonic()
            podman("kill", "--signal", "TERM", c.name)
            # Draining: out of rotation (tini has to pass the signal on first, hence the short wait).
            deadline = time.monotonic() + 5
            while httpx.get(c.url + "/health", timeout=5).status_code != 503:
                assert time.monotonic() < deadline, "/health still 200 after SIGTERM"
                time.sleep(0.05)
            done = False
            for line in lines:
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunks.append(json.loads(line[6:]))
        assert done and chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(1 for ch in chunks if ch["choices"][0]["text"]) >= 40
        code = podman("wait", c.name, timeout=60).stdout.strip()
        assert code == "0", podman("logs", c.name, check=False).stderr[-3000:]
        assert time.monotonic() - t_term < 45  # the pods' terminationGracePeriodSeconds
    finally:
        c.remove()


@pytest.mark.slow
def test_kube_play_of_the_stable_overlay(image: str, gemma_path: Path, tmp_path: Path) -> None:
    import httpx

    yaml = pytest.importorskip("yaml", reason="python tools/deps.py deploy")
    try:
        k8s_validate.tool("kubectl")
    except SystemExit:
        pytest.skip("kubectl is not installed: python tools/deps.py deploy")
    port = free_port()
    # A test-only overlay on the real one: one replica with a host port on 127.0.0.1, and a
    # CPU limit this small machine can give (the ConfigMap's MARKETING_THREADS=8 must then be cut to 1).
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "deploy/k8s/overlays/stable", overlay)],
        "patches": [{"target": {"kind": "Deployment"}, "patch": yaml.safe_dump([
            {"op": "replace", "path": "/spec/replicas", "value": 1},  # podman plays each replica: one port
            {"op": "add", "path": "/spec/template/spec/containers/0/ports/0/hostPort", "value": port},
            {"op": "add", "path": "/spec/template/spec/containers/0/ports/0/hostIP", "value": "127.0.0.1"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/resources",
             "value": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}},
        ])}],
    }))
    resources = docs(k8s_validate.render(overlay))
    # podman runs pods: the Service, PDB, HPA and claim need a cluster. The claim's volume is
    # made here, holding the model, under the name podman looks up for the claim.
    played = tmp_path / "play.yaml"
    played.write_text(yaml.safe_dump_all([r for r in resources if r["kind"] in ("ConfigMap", "Deployment")]))
    claim = one(resources, "PersistentVolumeClaim")["metadata"]["name"]
    models = tmp_path / "models"
    models.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    try:
        os.link(gemma_path, models / "model.gguf")
    except OSError:
        shutil.copyfile(gemma_path, models / "model.gguf")
    (models / "model.gguf").chmod(0o644)
    podman("volume", "rm", "-f", claim, check=False)
    podman("volume", "create", "--opt", "type=none", "--opt", f"device={models}", "--opt", "o=bind", claim)
    try:
        podman("kube", "play", str(played), timeout=180)
        (name,) = [n for n in podman("ps", "--format", "{{.Names}}").stdout.split() if n.endswith("-server")
                   and "sarai-llama-stable" in n]
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, name)
        env = dict(line.split("=", 1) for line in podman("exec", name, "env").stdout.splitlines() if "=" in line)
        assert env["SARAI_THREAD_MODE"] == "auto" and env["MARKETING_THREADS"] == "8"
        assert env["SARAI_JOB"] == "marketing" and env["SARAI_DRAIN_TIMEOUT"] == "30"
        doctor = json.loads(podman("exec", name, "sarai-llama", "doctor", "--json", check=False).stdout)
        assert any(n.startswith("MARKETING_THREADS=8 exceeds the 1 usable CPUs") for n in doctor["notes"]), doctor
        out = httpx.post(url + "/v1/completions", timeout=120,
                         json={"prompt": "The Eiffel Tower is located in the city of", "max_tokens": 4,
                               "temperature": 0})
        assert out.status_code == 200 and out.json()["choices"][0]["text"].strip().startswith("Paris"), out.text
    finally:
        down = podman("kube", "down", str(played), check=False, timeout=120)
        podman("volume", "rm", "-f", claim, check=False)
    assert down.returncode == 0, down.stderr
    assert not [n for n in podman("ps", "-a", "--format", "{{.Names}}").stdout.split() if "sarai-llama-stable" in n]


def test_many_models_overlay_serves_the_volume_by_name(rendered: dict[str, str], tmp_path: Path) -> None:
    """The overlay's ConfigMap is a valid `serve` configuration: no positional model, the volume's
    models by name, the memory limit as their budget."""
    from sarai_llama.server.settings import parse

    resources = docs(rendered["overlay-many-models"])
    config = one(resources, "ConfigMap")["data"]
    (ctr,) = one(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert ctr["resources"]["limits"]["memory"] == ctr["resources"]["requests"]["memory"]  # the budget is fixed
    settings = parse([], environ={**config, "SARAI_MODELS_DIR": str(tmp_path)})
    assert settings.model in (None, "") and settings.many
    assert (settings.models_memory, settings.idle_unload) == ("auto", 1800.0)


def resident(name: str) -> dict[str, int]:
    """The server's resident memory in bytes by kind (``RssAnon``, ``RssFile``, ``VmHWM``, ...), read
    from the host's /proc: the container's first process is tini, the server its child."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = {}
    for line in Path(f"/proc/{child}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


@pytest.mark.slow
def test_models_cycle_within_the_container_memory_limit(image: str, gemma_path: Path, tmp_path: Path) -> None:
    """Five models through a budget that holds two (the cgroup's limit, read by --models-memory auto):
    each request loads its model after the least recently used one is unloaded, the server's
    anonymous resident memory (heap, KV caches, repacked weights: what the kernel cannot reclaim
    without swap) stays under the limit and nothing is OOM-killed. (The weights' file pages count
    in RSS too, but they are clean page cache, charged to whoever read the file first and
    reclaimable, so the total RSS is no measure of what the cgroup holds.)"""
    import httpx

    models = tmp_path / "models"
    models.mkdir()
    for i in range(5):  # copies, not links: five files, five mappings
        shutil.copyfile(gemma_path, models / f"g{i}.gguf")
    limit_mib = 1280  # budget = limit - 256 MiB margin = 1024 MiB: two Gemmas at 1024 cells (~415 MiB each)
    name, port = f"sarai-test-models-{os.getpid()}", free_port()
    podman("run", "-d", "--name", name, "--read-only", "--cap-drop", "all", "--memory", f"{limit_mib}m",
           "--memory-swap", f"{limit_mib}m", "--cpus", "2", "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{models}:/models:ro", "-e", "SARAI_MODEL=", "-e", "SARAI_MODELS_DIR=/models",
           "-e", "SARAI_CTX_SIZE=1024", "-e", "SARAI_PARALLEL=1", image)
    url = f"http://127.0.0.1:{port}"
    anon: list[int] = []
    try:
        wait_healthy(url, name)
        listing = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        assert len(listing) == 5
        for rnd in range(2):
            for i in range(5):
                r = httpx.post(url + "/v1/completions", json={"model": f"g{i}", "prompt": "Hello", "max_tokens": 4},
                               timeout=120)
                assert r.status_code == 200, r.text
                loaded = [m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]
                          if m["status"]["value"] == "loaded"]
                assert len(loaded) <= 2 and f"g{i}" in loaded
                anon.append(resident(name)["RssAnon"])
        print(f"anonymous RSS after each request: {[a >> 20 for a in anon]} MiB (limit {limit_mib} MiB)")
        assert max(anon) < limit_mib << 20, f"anonymous RSS {[a >> 20 for a in anon]} MiB, limit {limit_mib} MiB"
        assert max(anon[5:]) < 1.5 * max(anon[:5]), f"memory grows as models cycle: {[a >> 20 for a in anon]} MiB"
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["Running"] and not state["OOMKilled"]
        log = podman("logs", name).stderr
        assert "memory budget 1024 MiB (cgroup memory limit 1280 MiB - margin 256 MiB)" in log
        assert log.count("unloaded model g") >= 8  # every load after the first two made room
    finally:
        podman("rm", "-f", "-v", "-t", "0", name, check=False)
