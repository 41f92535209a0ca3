#!/usr/bin/env bash
# Install and load the v4l2loopback virtual camera driver for Live2Diff Camera (needs root).
#
#   sudo installers/linux/setup-virtual-camera.sh [options]
#
#   --dry-run              print what it would do; change nothing (no root needed)
#   --uninstall            remove this script's modprobe.d / modules-load.d files and unload the module
#   --no-exclusive-caps    load with exclusive_caps=0 (the Zoom snap needs it; Chrome/WebRTC need 1)
#   --video-nr N           the device number: /dev/videoN (default 10)
#   --label NAME           the camera name apps show (default "Live2Diff Camera")
#   --distro apt|dnf|pacman  the package manager to use (default: the one found)
#   -h, --help             this help
#
# Idempotent: files already holding the wanted text are left alone, a module already loaded with the
# wanted options is not reloaded, installed packages are not reinstalled.
# Checks Secure Boot (mokutil): a DKMS-built module must be signed with a key enrolled in MOK.
set -euo pipefail

# Tests point SYSROOT at a temporary folder; /etc and /sys are read and written under it.
sysroot="${VCAM_SYSROOT:-}"
dry_run=0
uninstall=0
exclusive_caps=1
video_nr=10
label="Live2Diff Camera"
distro=""
conf_name="live2diff-vcam.conf"

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
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --no-exclusive-caps) exclusive_caps=0 ;;
    --exclusive-caps) exclusive_caps=1 ;;
    --video-nr)
      [ $# -ge 2 ] || { echo "setup-virtual-camera.sh: --video-nr needs a number" >&2; exit 2; }
      video_nr="$2"; shift ;;
    --label)
      [ $# -ge 2 ] || { echo "setup-virtual-camera.sh: --label needs a name" >&2; exit 2; }
      label="$2"; shift ;;
    --distro)
      [ $# -ge 2 ] || { echo "setup-virtual-camera.sh: --distro needs apt, dnf or pacman" >&2; exit 2; }
      distro="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup-virtual-camera.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

case "$video_nr" in
  ''|*[!0-9]*) echo "setup-virtual-camera.sh: --video-nr must be a number from 0 to 255, got '$video_nr'" >&2; exit 2 ;;
esac
if [ "$video_nr" -gt 255 ]; then
  echo "setup-virtual-camera.sh: --video-nr must be a number from 0 to 255, got '$video_nr'" >&2; exit 2
fi
case "$label" in
  *'"'*|'') echo "setup-virtual-camera.sh: --label must be non-empty and without double quotes, got '$label'" >&2; exit 2 ;;
esac

modprobe_conf="$sysroot/etc/modprobe.d/$conf_name"
modules_load_conf="$sysroot/etc/modules-load.d/$conf_name"
module_dir="$sysroot/sys/module/v4l2loopback"
options_line="options v4l2loopback devices=1 video_nr=$video_nr card_label=\"$label\" exclusive_caps=$exclusive_caps"
module_args=(v4l2loopback devices=1 "video_nr=$video_nr" "card_label=$label" "exclusive_caps=$exclusive_caps")

# shellcheck source=installers/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
warn() { echo "setup-virtual-camera.sh: warning: $*" >&2; }


# Write `content` to `path` unless it already holds exactly that text.
write_file() {
  local path="$1" content="$2"
  if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
    say "$path is up to date"
    return 0
  fi
  if [ "$dry_run" = 1 ]; then
    say "would write $path:"
    printf '    %s\n' "$content"
    return 0
  fi
  say "writing $path"
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" > "$path"
}

remove_file() {
  local path="$1"
  if [ ! -e "$path" ]; then
    say "$path is already gone"
    return 0
  fi
  run rm -f "$path"
}

detect_distro() {
  if [ -n "$distro" ]; then
    case "$distro" in
      apt|dnf|pacman) return 0 ;;
      *) echo "setup-virtual-camera.sh: --distro must be apt, dnf or pacman, got '$distro'" >&2; exit 2 ;;
    esac
  fi
  if command -v apt-get >/dev/null 2>&1; then distro=apt
  elif command -v dnf >/dev/null 2>&1; then distro=dnf
  elif command -v pacman >/dev/null 2>&1; then distro=pacman
  else
    echo "setup-virtual-camera.sh: no apt-get, dnf or pacman found; install v4l2loopback with your" \
      "distribution's tools, then run this script again with --distro set to the closest match" >&2
    exit 2
  fi
}

module_installed() {
  command -v modinfo >/dev/null 2>&1 && modinfo v4l2loopback >/dev/null 2>&1
}

package_installed() {
  case "$distro" in
    apt) command -v dpkg-query >/dev/null 2>&1 \
      && dpkg-query -W -f='${Status}' v4l2loopback-dkms 2>/dev/null | grep -q "install ok installed" ;;
    dnf) command -v rpm >/dev/null 2>&1 && rpm -q akmod-v4l2loopback >/dev/null 2>&1 ;;
    pacman) pacman -Q v4l2loopback-dkms >/dev/null 2>&1 ;;
  esac
}

install_packages() {
  local kernel
  kernel="$(uname -r)"
  if package_installed && module_installed; then
    say "v4l2loopback is already installed for kernel $kernel"
    return 0
  fi
  say "installing v4l2loopback ($distro) for kernel $kernel"
  case "$distro" in
    apt)
      run apt-get update
      run apt-get install -y v4l2loopback-dkms v4l2loopback-utils "linux-headers-$kernel" ;;
    dnf)
      # akmod-v4l2loopback comes from RPM Fusion (free); enable it first if dnf cannot find the package.
      run dnf install -y akmod-v4l2loopback v4l2loopback "kernel-devel-$kernel" ;;
    pacman)
      # Other kernels than `linux` need their own headers package (linux-lts-headers, linux-zen-headers, ...).
      run pacman -S --needed --noconfirm v4l2loopback-dkms v4l2loopback-utils linux-headers ;;
  esac
}

uninstall_hint() {
  case "$distro" in
    apt) echo "apt-get remove v4l2loopback-dkms v4l2loopback-utils" ;;
    dnf) echo "dnf remove akmod-v4l2loopback v4l2loopback" ;;
    pacman) echo "pacman -R v4l2loopback-dkms v4l2loopback-utils" ;;
  esac
}

# Secure Boot: "enabled" / "disabled" / "unknown" (no mokutil, or no EFI).
secure_boot_state() {
  local out
  if ! command -v mokutil >/dev/null 2>&1; then echo unknown; return 0; fi
  out="$(mokutil --sb-state 2>/dev/null || true)"
  case "$out" in
    *"SecureBoot enabled"*) echo enabled ;;
    *"SecureBoot disabled"*) echo disabled ;;
    *) echo unknown ;;
  esac
}

# The public key DKMS/akmods sign modules with, if one exists on this machine.
signing_key() {
  local key
  for key in /var/lib/dkms/mok.pub /var/lib/shim-signed/mok/MOK.der /etc/pki/akmods/certs/public_key.der; do
    if [ -f "$sysroot$key" ]; then echo "$key"; return 0; fi
  done
  case "$distro" in
    dnf) echo /etc/pki/akmods/certs/public_key.der ;;
    *) echo /var/lib/dkms/mok.pub ;;
  esac
}

check_secure_boot() {
  local state key
  state="$(secure_boot_state)"
  case "$state" in
    disabled) say "Secure Boot is disabled: the module loads unsigned"; return 0 ;;
    unknown) say "Secure Boot state unknown (no mokutil or no EFI): assuming modules load unsigned"; return 0 ;;
  esac
  key="$(signing_key)"
  if [ -f "$sysroot$key" ] && mokutil --test-key "$key" 2>/dev/null | grep -q "already enrolled"; then
    say "Secure Boot is enabled and the module signing key $key is enrolled"
    return 0
  fi
  echo "Secure Boot is enabled: the kernel only loads the v4l2loopback module if it is signed with a key"
  echo "enrolled in MOK. DKMS (akmods on Fedora) signs it with $key; enroll that key once:"
  if [ "$distro" = dnf ] && [ ! -f "$sysroot$key" ]; then
    echo "    sudo kmodgenca -a"
  fi
  echo "    sudo mokutil --import $key"
  echo "then reboot and pick 'Enroll MOK' in the blue MOK manager screen (it asks for the password you set),"
  echo "and run this script again. Turning Secure Boot off in the firmware settings works too."
}

module_loaded() { [ -d "$module_dir" ]; }

# The first value of an array module parameter, e.g. "Y" from "Y,N,N,N".
module_param() {
  local file="$module_dir/parameters/$1"
  [ -r "$file" ] || { echo ""; return 0; }
  cut -d, -f1 < "$file"
}

loaded_with_wanted_options() {
  local caps nr
  caps="$(module_param exclusive_caps)"
  nr="$(module_param video_nr)"
  case "$caps" in Y|1) caps=1 ;; N|0) caps=0 ;; esac
  [ "$caps" = "$exclusive_caps" ] && [ "$nr" = "$video_nr" ]
}

load_module() {
  if module_loaded; then
    if loaded_with_wanted_options; then
      say "v4l2loopback is already loaded with video_nr=$video_nr exclusive_caps=$exclusive_caps"
      return 0
    fi
    say "v4l2loopback is loaded with other options: reloading it (close apps using the virtual camera first)"
    if ! run modprobe -r v4l2loopback; then
      echo "setup-virtual-camera.sh: cannot unload v4l2loopback: a program is using it. Close OBS, browsers" \
        "and meeting apps, then run this script again." >&2
      exit 1
    fi
  fi
  if [ "$dry_run" = 1 ]; then
    run modprobe "${module_args[@]}"
    return 0
  fi
  local error
  show_cmd modprobe "${module_args[@]}"
  if ! error="$(modprobe "${module_args[@]}" 2>&1)"; then
    echo "setup-virtual-camera.sh: modprobe v4l2loopback failed: $error" >&2
    case "$error" in
      *"Key was rejected"*|*"Required key not available"*) check_secure_boot >&2 ;;
      *"not found"*) echo "The module was not built for kernel $(uname -r): install its headers" \
        "(apt: linux-headers-$(uname -r); dnf: kernel-devel; pacman: linux-headers), then run this script again." >&2 ;;
    esac
    exit 1
  fi
  say "loaded: /dev/video$video_nr is \"$label\""
}

warn_other_configs() {
  local file
  for file in "$sysroot"/etc/modprobe.d/*.conf; do
    [ -f "$file" ] || continue
    [ "$file" = "$modprobe_conf" ] && continue
    if grep -q "^[[:space:]]*options[[:space:]]\+v4l2loopback" "$file"; then
      warn "$file also sets v4l2loopback options; they mix with ours at boot. Remove them if the camera misbehaves."
    fi
  done
}

# --- main ---
if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "setup-virtual-camera.sh: this changes system files and loads a kernel module, so it needs root:" >&2
  echo "    sudo $0 $*" >&2
  echo "(add --dry-run to see what it would do without changing anything)" >&2
  exit 2
fi
[ "$dry_run" = 1 ] && say "dry run: nothing is changed"
detect_distro

if [ "$uninstall" = 1 ]; then
  say "removing the Live2Diff Camera driver set-up"
  remove_file "$modprobe_conf"
  remove_file "$modules_load_conf"
  if module_loaded; then
    run modprobe -r v4l2loopback || warn "v4l2loopback is in use; it unloads at the next reboot"
  else
    say "v4l2loopback is not loaded"
  fi
  say "the v4l2loopback package stays installed (other apps such as OBS use it); to remove it: sudo $(uninstall_hint)"
  exit 0
fi

install_packages
check_secure_boot
write_file "$modprobe_conf" "$options_line"
write_file "$modules_load_conf" "v4l2loopback"
warn_other_configs
load_module
if [ "$exclusive_caps" = 1 ]; then
  say "exclusive_caps=1: Chrome, Edge and other WebRTC apps list the camera (use --no-exclusive-caps for the Zoom snap)"
else
  say "exclusive_caps=0: the Zoom snap lists the camera; Chrome and WebRTC apps may not (drop --no-exclusive-caps for them)"
fi
if [ "$dry_run" = 1 ]; then
  if [ "${VCAM_CALLED_BY:-}" = install.sh ]; then
    # install.sh runs as the user and calls this script with sudo: its own last line says how to go on
    say "dry run of the driver set-up finished (install.sh runs it with sudo)"
  else
    say "dry run finished: run it again without --dry-run, as root (sudo), to do it"
  fi
else
  say "done: pick \"$label\" in your meeting app while vcam is running"
fi
