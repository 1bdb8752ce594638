# Sourced by the scripts that install Debian packages (system_deps.sh, podman_setup.sh).
# root_prefix: sets the array `sudo` to what runs a command as root here -- nothing
# when we are root, (sudo) when passwordless sudo works -- and returns 1 when
# neither does, leaving the message to the caller (each script says what it skips).
root_prefix() {
  sudo=()
  [ "$(id -u)" = 0 ] && return 0
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
    return 0
  fi
  return 1
}
