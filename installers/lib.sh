# Shared helpers of the installer scripts (sourced, not run). Each script sets `dry_run` (0 or 1).
# shellcheck shell=bash

say() { echo "==> $*"; }

# Print a command the way a user would type it (arguments with spaces in single quotes).
show_cmd() {
  local out="" arg
  for arg in "$@"; do
    case "$arg" in
      *[!A-Za-z0-9_./=:,+@%-]*) out="$out '${arg//\'/\'\\\'\'}'" ;;
      *) out="$out $arg" ;;
    esac
  done
  echo "+${out}"
}

# Run a command that changes the system; in --dry-run only print it.
run() {
  show_cmd "$@"
  if [ "${dry_run:-0}" = 0 ]; then
    "$@"
  fi
}
