#!/usr/bin/env bash
# Install Live2Diff Camera on Linux: the tray's system packages, the app in a virtual environment
# (torch built for the GPU found), a menu entry, the virtual camera driver, optionally autostart.
# Run it as yourself, not as root: it asks for sudo for the system parts.
#
#   installers/linux/install.sh [options]
#
#   --venv PATH            the virtual environment (default: .venv in the source folder)
#   --torch KIND           cpu | cuda | rocm | auto (default auto: nvidia-smi, rocminfo, else cpu)
#   --autostart            start the tray at login
#   --no-driver            skip the v4l2loopback driver (setup-virtual-camera.sh)
#   --no-exclusive-caps    passed to setup-virtual-camera.sh (the Zoom snap needs it)
#   --no-tray-packages     skip python3-gi and the AppIndicator typelibs
#   --no-desktop-entry     skip the menu entry
#   --distro apt|dnf|pacman  the package manager to use (default: the one found)
#   --dry-run              print what it would do; change nothing
#   --uninstall            remove the menu entry, autostart and the driver set-up (the venv stays)
#   -h, --help             this help
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$root/.venv"
torch_kind="auto"
autostart=0
driver=1
exclusive_caps_flag=""
tray_packages=1
desktop_entry=1
distro=""
dry_run=0
uninstall=0

#: what to do after a dry run (as yourself: this script asks for sudo for the system parts)
DRY_RUN_AGAIN="run installers/linux/install.sh again without --dry-run, as yourself (not as root): it asks for sudo for the driver and system packages"
# The usage is the header comment, up to the first line of code (pure bash: no tool on PATH needed).
usage() {
  local line
  while IFS= read -r line; do
    case "$line" in
      '#!'*) ;;
      '#'*) line=${line#\#}; printf '%s\n' "${line# }" ;;
      *) return 0 ;;
    esac
  done < "${BASH_SOURCE[0]}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] || { echo "install.sh: --venv needs a path" >&2; exit 2; }; venv="$2"; shift ;;
    --torch) [ $# -ge 2 ] || { echo "install.sh: --torch needs a kind" >&2; exit 2; }; torch_kind="$2"; shift ;;
    --autostart) autostart=1 ;;
    --no-driver) driver=0 ;;
    --no-exclusive-caps) exclusive_caps_flag="--no-exclusive-caps" ;;
    --no-tray-packages) tray_packages=0 ;;
    --no-desktop-entry) desktop_entry=0 ;;
    --distro) [ $# -ge 2 ] || { echo "install.sh: --distro needs apt, dnf or pacman" >&2; exit 2; }; distro="$2"; shift ;;
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac

# shellcheck source=installers/lib.sh
. "$here/../lib.sh"


# Root-only commands: through sudo unless we are root already.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    run "$@"
  else
    run sudo "$@"
  fi
}

if [ "$(id -u)" = 0 ] && [ "$dry_run" = 0 ] && [ -n "${SUDO_USER:-}" ]; then
  echo "install.sh: run this as $SUDO_USER, not with sudo: the app, its menu entry and autostart belong to" \
    "your user; the script asks for sudo itself for the driver and system packages" >&2
  exit 2
fi

if [ -z "$distro" ]; then
  if command -v apt-get >/dev/null 2>&1; then distro=apt
  elif command -v dnf >/dev/null 2>&1; then distro=dnf
  elif command -v pacman >/dev/null 2>&1; then distro=pacman
  fi
fi

driver_args=()
[ "$dry_run" = 1 ] && driver_args+=(--dry-run)
[ -n "$distro" ] && driver_args+=(--distro "$distro")
[ -n "$exclusive_caps_flag" ] && driver_args+=("$exclusive_caps_flag")

vcam="$venv/bin/vcam"
python="$venv/bin/python"

if [ "$uninstall" = 1 ]; then
  [ "$dry_run" = 1 ] && say "dry run: nothing is changed"
  if [ -x "$python" ]; then
    run "$python" -m vcam.desktop_entry remove
    run "$vcam" tray --autostart off
  else
    say "no app in $venv: no menu entry or autostart to remove"
  fi
  if [ "$driver" = 1 ] && [ "$dry_run" = 1 ]; then
    VCAM_CALLED_BY=install.sh "$here/setup-virtual-camera.sh" --uninstall "${driver_args[@]}"
  elif [ "$driver" = 1 ]; then
    as_root "$here/setup-virtual-camera.sh" --uninstall "${driver_args[@]}"
  fi
  say "the virtual environment stays: remove it with: rm -rf '$venv'"
  exit 0
fi

[ "$dry_run" = 1 ] && say "dry run: nothing is changed"

# 1. The tray's system packages: GTK and AppIndicator through GObject introspection (PyGObject from
#    PyPI needs a compiler and cairo headers, so the distribution's build is used).
if [ "$tray_packages" = 1 ]; then
  say "installing the tray's system packages ($distro)"
  case "$distro" in
    apt)
      as_root apt-get update
      as_root apt-get install -y python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1 ;;
    dnf) as_root dnf install -y python3-gobject gtk3 libayatana-appindicator-gtk3 ;;
    pacman) as_root pacman -S --needed --noconfirm python-gobject gtk3 libayatana-appindicator ;;
    *) say "no apt-get, dnf or pacman: install PyGObject, GTK 3 and Ayatana AppIndicator yourself" ;;
  esac
fi

# 2. The venv, torch for the GPU found, the app.
run "$root/installers/install.sh" --venv "$venv" --torch "$torch_kind"

# 3. Make the system's `gi` (PyGObject) importable in the venv, when the Python versions match.
if [ "$tray_packages" = 1 ]; then
  if [ "$dry_run" = 1 ]; then
    say "would link the system's gi package into $venv (for the tray menu)"
  elif system_gi="$(/usr/bin/python3 -c 'import gi, os; print(os.path.dirname(gi.__file__))' 2>/dev/null)"; then
    site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    same_python="$("$python" -c 'import sys; print(sys.version_info[:2])')"
    system_python="$(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2])')"
    if "$python" -c 'import gi' >/dev/null 2>&1; then
      say "gi is already importable in the venv"
    elif [ "$same_python" = "$system_python" ]; then
      run ln -sfn "$system_gi" "$site/gi"
    else
      say "the venv's Python $same_python differs from the system's $system_python: the tray uses its plain" \
        "icon backend (no menu). Recreate the venv with /usr/bin/python3 for menus: PYTHON=/usr/bin/python3 $0"
    fi
  else
    say "the system's python3-gi is not importable: the tray falls back to a plain icon"
  fi
fi

# 4. The menu entry and autostart.
if [ "$desktop_entry" = 1 ]; then
  run "$python" -m vcam.desktop_entry install --exec "$vcam" tray
  if [ "$dry_run" = 0 ] && command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database "${XDG_DATA_HOME:-$HOME/.local/share}/applications" >/dev/null 2>&1 || true
  fi
fi
if [ "$autostart" = 1 ]; then
  run "$vcam" tray --autostart on
fi

# 5. The virtual camera driver.
if [ "$driver" = 1 ] && [ "$dry_run" = 1 ]; then
  VCAM_CALLED_BY=install.sh "$here/setup-virtual-camera.sh" "${driver_args[@]}"  # its own dry run shows its plan
elif [ "$driver" = 1 ]; then
  as_root "$here/setup-virtual-camera.sh" "${driver_args[@]}"
fi

# 6. What is still missing, with the command that fixes each piece.
if [ "$dry_run" = 0 ]; then
  "$vcam" doctor || true
  say "done: start the tray from the app menu ('Live2Diff Camera') or run: $vcam tray"
else
  say "dry run finished: $DRY_RUN_AGAIN"
fi
