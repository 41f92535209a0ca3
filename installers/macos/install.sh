#!/usr/bin/env bash
# Install Live2Diff Camera on macOS (Apple silicon): the app in a virtual environment with the
# MPS build of torch, optionally a LaunchAgent that starts the tray at login, and the steps that
# turn on OBS Studio 30+'s camera extension, which is the virtual camera the app sends to.
# (The old DAL plug-ins no longer load on macOS 14 and later; OBS 30+ ships a camera extension.)
#
#   installers/macos/install.sh [options]
#
#   --venv PATH     the virtual environment (default: .venv in the source folder)
#   --autostart     start the tray at login (a LaunchAgent in ~/Library/LaunchAgents)
#   --dry-run       print what it would do; change nothing
#   --uninstall     remove the LaunchAgent (the venv stays)
#   -h, --help      this help
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$root/.venv"
autostart=0
dry_run=0
uninstall=0
obs_app="${OBS_APP:-/Applications/OBS.app}"
obs_extension_id="com.obsproject.obs-studio.mac-camera-extension"

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
    --autostart) autostart=1 ;;
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
vcam="$venv/bin/vcam"

# shellcheck source=installers/lib.sh
. "$here/../lib.sh"


if [ "$(uname -s)" != "Darwin" ] && [ "$dry_run" = 0 ]; then
  echo "install.sh: this is the macOS installer; on Linux use installers/linux/install.sh" >&2
  exit 2
fi
[ "$dry_run" = 1 ] && say "dry run: nothing is changed"

if [ "$uninstall" = 1 ]; then
  if [ -x "$vcam" ]; then
    run "$vcam" tray --autostart off
  else
    say "no app in $venv: no LaunchAgent to remove"
  fi
  say "the virtual environment stays: remove it with: rm -rf '$venv'"
  exit 0
fi

if [ "$(uname -m)" != "arm64" ] && [ "$(uname -s)" = "Darwin" ]; then
  echo "install.sh: this Mac has an Intel CPU ($(uname -m)); PyTorch publishes no macOS builds for it after" \
    "torch 2.2, and the app needs torch 2.4 or newer. Use an Apple silicon Mac, or a Linux/Windows PC." >&2
  exit 2
fi

# 1. The venv, torch (the macOS wheels include the MPS backend), the app.
run "$root/installers/install.sh" --venv "$venv" --torch mps

# 2. Autostart at login.
if [ "$autostart" = 1 ]; then
  run "$vcam" tray --autostart on
fi

# 3. The virtual camera: OBS Studio 30+ and its camera extension.
obs_version=""
if [ -d "$obs_app" ]; then
  obs_version="$(defaults read "$obs_app/Contents/Info" CFBundleShortVersionString 2>/dev/null || true)"
fi
obs_major="${obs_version%%.*}"
extension_on=0
if command -v systemextensionsctl >/dev/null 2>&1 \
  && systemextensionsctl list 2>/dev/null | grep "$obs_extension_id" | grep -q "activated enabled"; then
  extension_on=1
fi

if [ "$extension_on" = 1 ]; then
  say "the OBS camera extension is installed and enabled: pick \"OBS Virtual Camera\" in your meeting app"
else
  echo
  echo "The virtual camera needs OBS Studio's camera extension (one time):"
  if [ -z "$obs_version" ]; then
    echo "  1. Install OBS Studio 30 or newer:  brew install --cask obs   (or from obsproject.com)"
  elif [ -n "$obs_major" ] && [ "$obs_major" -lt 30 ] 2>/dev/null; then
    echo "  1. Update OBS Studio: $obs_version is too old (its DAL plug-in does not load on macOS 14+);"
    echo "     install 30 or newer:  brew upgrade --cask obs"
  else
    echo "  1. OBS Studio $obs_version is installed."
  fi
  echo "  2. Open OBS and click 'Start Virtual Camera' once: macOS asks to allow the camera extension."
  echo "  3. Allow it: System Settings > General > Login Items & Extensions > Camera Extensions (macOS 15),"
  echo "     or System Settings > Privacy & Security > 'Allow' (macOS 13 and 14). Reboot if asked."
  echo "  4. Click 'Stop Virtual Camera' and quit OBS: while OBS's own virtual camera runs, the app cannot send to it."
  echo "  5. Restart your meeting app and pick \"OBS Virtual Camera\" while vcam is running."
  echo "  Check it with: systemextensionsctl list | grep $obs_extension_id"
  echo
fi

if [ "$dry_run" = 0 ]; then
  "$vcam" doctor || true
  say "done: start the tray with: $vcam tray"
else
  say "dry run finished"
fi
