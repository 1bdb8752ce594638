#!/usr/bin/env bash
# Makes podman usable on this machine for `make image` and the deploy tests, and
# does nothing when it already is (idempotent; .ci/run and `make image` call it).
#  - Debian packages: podman, runc, mmdebstrap (builds the base image locally:
#    no container registry is needed or assumed reachable), uidmap, slirp4netns,
#    catatonit. Installed without podman's Recommends, so each Recommends is
#    decided here, in `pkgs` or in `not_needed` with its reason;
#    tests/test_deploy.py checks that the installed podman recommends nothing else.
#  - /etc/containers/containers.conf: runtime = "runc", because crun refuses
#    cgroup v1/hybrid hosts ("cgroups in hybrid mode not supported"); and
#    default_ulimits no higher than what a sandboxed host grants (podman's
#    default asks for more nofile than some hosts allow, and runc then fails).
# Only root (or passwordless sudo) can do this; otherwise it prints the commands
# and exits 1, because the targets that call it cannot work without podman.
set -euo pipefail

# catatonit: the pause binary of a pod's infra container (`podman kube play`, `podman pod create`).
pkgs=(podman runc mmdebstrap uidmap slirp4netns catatonit)
# podman's Recommends (Debian 12 and 13) that the images and kube tests do not use: name|why.
not_needed=(
  "buildah|podman build has buildah compiled in; the buildah command is not used"
  "tini|an alternative to catatonit (installed) for the pause binary"
  "dumb-init|an alternative to catatonit (installed) for the pause binary"
  "dbus-user-session|rootless podman under a systemd user session; podman runs as root here"
  "fuse-overlayfs|rootless overlay storage; root uses the kernel's overlay"
  "passt|rootless networking of podman 5; rootful containers use netavark or CNI"
  "containers-storage|the storage library is compiled into podman; this package is its separate CLI"
  "ca-certificates|no registry is contacted: the base image is made locally with mmdebstrap"
  "criu|container checkpoint/restore, not used"
  "libcriu2|container checkpoint/restore, not used"
)
if [ "${1:-}" = "--packages" ]; then  # the decisions, for tests/test_deploy.py
  printf 'install %s\n' "${pkgs[@]}"
  for entry in "${not_needed[@]}"; do printf 'skip %s\n' "${entry%%|*}"; done
  exit 0
fi
conf=/etc/containers/containers.conf
want_runtime='runtime = "runc"'
want_ulimits='default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]'

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
conf_ok=1
grep -qsF "$want_runtime" "$conf" && grep -qsF "$want_ulimits" "$conf" || conf_ok=0
if [ ${#missing[@]} -eq 0 ] && [ "$conf_ok" = 1 ]; then
  echo "podman setup: in place ($(podman --version))"
  exit 0
fi

. "$(dirname "$0")/root_prefix.sh"
if ! root_prefix; then
  echo "podman setup needs root: sudo bash $0" >&2
  exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "install ${missing[*]} with your package manager" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The [engine] table is written once, with exactly these two settings; an
# existing file with other settings is kept and only these keys are added.
if [ "$conf_ok" = 0 ]; then
  "${sudo[@]}" mkdir -p "$(dirname "$conf")"
  tmp=$(mktemp)
  if [ -f "$conf" ]; then
    grep -vE '^\s*(runtime|default_ulimits)\s*=' "$conf" >"$tmp" || true
  fi
  grep -q '^\[engine\]' "$tmp" || printf '\n[engine]\n' >>"$tmp"
  sed -i "/^\[engine\]/a $want_runtime" "$tmp"
  grep -q '^\[containers\]' "$tmp" || printf '\n[containers]\n' >>"$tmp"
  sed -i "/^\[containers\]/a $want_ulimits" "$tmp"
  "${sudo[@]}" install -m 0644 "$tmp" "$conf"
  rm -f "$tmp"
  echo "podman setup: wrote $conf"
fi
echo "podman setup: done ($(podman --version))"
