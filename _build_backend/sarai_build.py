"""In-tree PEP 517 backend: scikit-build-core plus the project's own build settings.

``pip install --config-settings=native=true .`` passes a bare key that
scikit-build-core would reject; this module translates our keys into
scikit-build-core settings and hands every hook on unchanged otherwise.

Settings (config-settings key, or environment variable for tools that cannot
pass config-settings):

* ``native=true`` / ``SARAI_NATIVE=1``: build for this CPU only (-march=native,
  LTO). The wheel gets the build tag ``1native`` so it is never mistaken for a
  portable one, and its own persistent build directory.
* ``blas=none|openblas|system|vendored`` / ``SARAI_BLAS``: reserved for the
  native build's BLAS option.
"""

from __future__ import annotations

import os
from typing import Any

from scikit_build_core import build as _skbuild

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_BLAS = {"none", "openblas", "system", "vendored"}


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, list):  # pip passes a list when a key is repeated
        value = value[-1]
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: expected true or false")


def translate(config_settings: dict[str, Any] | None) -> dict[str, Any]:
    """Return scikit-build-core config-settings for ours (``native``, ``blas``) and theirs."""
    settings = dict(config_settings or {})
    native_value = settings.pop("native", os.environ.get("SARAI_NATIVE", "false"))
    native = _flag(native_value, "native")
    blas = str(settings.pop("blas", os.environ.get("SARAI_BLAS", "none"))).strip().lower()
    if blas not in _BLAS:
        raise ValueError(f"blas={blas!r}: expected one of {', '.join(sorted(_BLAS))}")
    if blas != "none" and not native:
        raise ValueError("blas= applies to the native build only: add native=true")

    settings["cmake.define.SARAI_NATIVE"] = "ON" if native else "OFF"
    settings["cmake.define.SARAI_BLAS"] = blas
    if native:
        settings.setdefault("build-dir", "build/{wheel_tag}-native")
        settings.setdefault("wheel.build-tag", "1native")
    return settings


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _skbuild.build_wheel(wheel_directory, translate(config_settings), metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _skbuild.build_editable(wheel_directory, translate(config_settings), metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    settings = dict(config_settings or {})
    settings.pop("native", None)
    settings.pop("blas", None)
    return _skbuild.build_sdist(sdist_directory, settings)


def get_requires_for_build_wheel(config_settings=None):
    return _skbuild.get_requires_for_build_wheel(translate(config_settings))


def get_requires_for_build_editable(config_settings=None):
    return _skbuild.get_requires_for_build_editable(translate(config_settings))


def get_requires_for_build_sdist(config_settings=None):
    return _skbuild.get_requires_for_build_sdist({})


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return _skbuild.prepare_metadata_for_build_wheel(metadata_directory, translate(config_settings))


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    return _skbuild.prepare_metadata_for_build_editable(metadata_directory, translate(config_settings))
