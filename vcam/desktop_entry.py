"""Freedesktop `.desktop` files: the app-menu entry that starts the tray (Linux), rendered and written.

`render_desktop_entry` is the one place a desktop entry's text is made, for the menu entry here and
for the autostart entry (`~/.config/autostart/`, written by the tray's autostart code with
`autostart=True`). `Exec` arguments are quoted by the Desktop Entry Specification's rules.

Run as a module by the Linux installer:
    python -m vcam.desktop_entry install --exec "/path/to/venv/bin/vcam" tray
    python -m vcam.desktop_entry remove
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: the file name of the menu entry (and of the autostart entry) under the applications folder
DESKTOP_FILE_NAME = "live2diff-vcam.desktop"
APP_TITLE = "Live2Diff Camera"
APP_COMMENT = "A virtual camera that restyles your webcam live (Live2Diff)"
#: a freedesktop icon-naming-spec name every icon theme has
DEFAULT_ICON = "camera-video"

# Characters that force an Exec argument into double quotes (Desktop Entry Specification, "The Exec key").
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
# Inside double quotes these are escaped with a backslash.
_ESCAPED_IN_QUOTES = set('"`$\\')


def quote_exec_arg(arg: str) -> str:
    """One `Exec` argument, quoted and escaped as the Desktop Entry Specification asks."""
    if arg == "":
        return '""'
    text = arg.replace("%", "%%")  # a literal % is written %% (field codes start with %)
    if not any(char in _RESERVED for char in text):
        return text
    quoted = "".join("\\" + char if char in _ESCAPED_IN_QUOTES else char for char in text)
    return '"' + quoted + '"'


def _escape_string_value(value: str) -> str:
    """A `string` value: backslashes doubled (applied after the Exec quoting), no raw newlines."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def exec_line(exec_cmd: str | Sequence[str]) -> str:
    """The `Exec` value: a sequence of arguments is quoted one by one; a string is taken as already quoted."""
    if isinstance(exec_cmd, str):
        if not exec_cmd.strip():
            raise ValueError("exec_cmd is empty: give the program to start, e.g. ['/path/to/vcam', 'tray']")
        return exec_cmd
    args = list(exec_cmd)
    if not args or not args[0]:
        raise ValueError(f"exec_cmd must start with the program to start, got {args!r}")
    return _escape_string_value(" ".join(quote_exec_arg(arg) for arg in args))


def render_desktop_entry(
    name: str,
    exec_cmd: str | Sequence[str],
    icon: str = DEFAULT_ICON,
    comment: str = APP_COMMENT,
    autostart: bool = False,
) -> str:
    """The text of a `.desktop` file that starts `exec_cmd` (Type=Application, no terminal).

    `exec_cmd` is a list of arguments (quoted here) or an already-quoted Exec string.
    `icon` is an icon-theme name or an absolute path. With `autostart=True` the entry is meant for
    `~/.config/autostart/` (enabled, a short delay so the tray area exists, no menu listing).
    """
    for key, value in (("name", name), ("icon", icon)):
        if not value or "\n" in value:
            raise ValueError(f"{key} must be a non-empty single line, got {value!r}")
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.5",
        f"Name={_escape_string_value(name)}",
        f"Comment={_escape_string_value(comment)}",
        f"Exec={exec_line(exec_cmd)}",
        f"Icon={_escape_string_value(icon)}",
        "Terminal=false",
        "StartupNotify=false",
    ]
    if autostart:
        lines += [
            "NoDisplay=true",
            "X-GNOME-Autostart-enabled=true",
            "X-GNOME-Autostart-Delay=5",
            "X-KDE-autostart-after=panel",
        ]
    else:
        lines += [
            "Categories=AudioVideo;Video;",
            "Keywords=webcam;camera;virtual camera;diffusion;style;meeting;",
        ]
    return "\n".join(lines) + "\n"


def applications_dir(home: Path | None = None) -> Path:
    """Where per-user menu entries live: $XDG_DATA_HOME/applications (or ~/.local/share/applications).

    An explicit `home` (tests, installers acting for a user) ignores XDG_DATA_HOME.
    """
    if home is not None:
        return home / ".local" / "share" / "applications"
    data_home = os.environ.get("XDG_DATA_HOME")
    if data_home and Path(data_home).is_absolute():
        return Path(data_home) / "applications"
    return Path.home() / ".local" / "share" / "applications"


def desktop_entry_path(home: Path | None = None) -> Path:
    return applications_dir(home) / DESKTOP_FILE_NAME


def default_exec_cmd() -> list[str]:
    """`<venv>/bin/vcam tray` for the Python running this (the venv the app is installed in)."""
    return [str(Path(sys.executable).parent / "vcam"), "tray"]


def write_desktop_file(path: Path, text: str) -> bool:
    """Write `text` to `path` (mode 0644, via a temporary file); returns False when it already held that text."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, path)
    return True


def install_desktop_entry(
    exec_cmd: str | Sequence[str] | None = None, icon: str = DEFAULT_ICON, home: Path | None = None
) -> Path:
    """Write the menu entry that starts the tray; returns its path. Idempotent."""
    path = desktop_entry_path(home)
    text = render_desktop_entry(APP_TITLE, exec_cmd if exec_cmd is not None else default_exec_cmd(), icon=icon)
    changed = write_desktop_file(path, text)
    log.info("%s %s", "wrote" if changed else "unchanged:", path)
    return path


def remove_desktop_entry(home: Path | None = None) -> bool:
    """Remove the menu entry; returns whether there was one."""
    path = desktop_entry_path(home)
    if not path.exists():
        return False
    path.unlink()
    log.info("removed %s", path)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vcam.desktop_entry", description="Install or remove the menu entry."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    install = sub.add_parser("install", help="write the menu entry that starts the tray")
    install.add_argument(
        "--exec",
        dest="exec_cmd",
        nargs="+",
        metavar="ARG",
        help="the command to start (default: this environment's `vcam tray`)",
    )
    install.add_argument("--icon", default=DEFAULT_ICON, help="an icon-theme name or an absolute path")
    install.add_argument("--home", type=Path, help="act on this home folder instead of the current user's")
    remove = sub.add_parser("remove", help="remove the menu entry")
    remove.add_argument("--home", type=Path, help="act on this home folder instead of the current user's")
    args = parser.parse_args(argv)
    if args.action == "install":
        path = install_desktop_entry(args.exec_cmd, icon=args.icon, home=args.home)
        print(f"menu entry: {path}")
        return 0
    removed = remove_desktop_entry(home=args.home)
    print(f"menu entry {'removed' if removed else 'was not there'}: {desktop_entry_path(args.home)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
