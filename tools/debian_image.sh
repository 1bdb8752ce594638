#!/usr/bin/env bash
# A local Debian image made from Debian's packages only: mmdebstrap --variant=minbase of
# SUITE with PACKAGES, `podman import`ed (no container registry is needed or contacted).
# Prints the image's name, localhost/sarai-llama-NAME:SUITE-<hash of the packages>, and
# builds it only when podman does not have it yet. deploy/build.sh (the server images) and
# tools/wheels.py (the wheels' Debian 11/12/13 checks, the Debian 11 CPython) use it.
#   bash tools/debian_image.sh NAME SUITE [PACKAGE...]
# Env: DEBIAN_IMAGE_SOURCES: extra apt source lines for mmdebstrap (e.g. a deb-src line).
set -euo pipefail
name=${1:?usage: debian_image.sh NAME SUITE [PACKAGE...]}
suite=${2:?usage: debian_image.sh NAME SUITE [PACKAGE...]}
shift 2
pkgs=("$@")
key=$( { printf '%s\n' "${pkgs[@]+"${pkgs[@]}"}"; echo "${DEBIAN_IMAGE_SOURCES:-}"; } | sha256sum | cut -c1-8)
tag="localhost/sarai-llama-$name:$suite-$key"
if ! podman image exists "$tag"; then
  echo "[debian-image] $tag: mmdebstrap --variant=minbase $suite" >&2
  t0=$SECONDS
  sources=("$suite")
  [ -n "${DEBIAN_IMAGE_SOURCES:-}" ] && sources+=("deb http://deb.debian.org/debian $suite main" "$DEBIAN_IMAGE_SOURCES")
  include=()
  [ ${#pkgs[@]} -gt 0 ] && include=(--include="$(IFS=,; echo "${pkgs[*]}")")
  # Documentation and translations are left out: nothing here reads them.
  mmdebstrap --quiet --variant=minbase ${include[@]+"${include[@]}"} \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" - "${sources[@]:1}" | podman import --quiet - "$tag" >/dev/null
  echo "[debian-image] $tag built in $((SECONDS - t0)) s" >&2
fi
echo "$tag"
