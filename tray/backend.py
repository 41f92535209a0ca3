"""Which pystray backend draws the icon, chosen before pystray is imported (it reads PYSTRAY_BACKEND then).

On Linux, menus need GTK through PyGObject (`gi`): the AppIndicator backend (a StatusNotifier item
on the session bus: GNOME with the AppIndicator extension, KDE, XFCE, ...) or the GTK backend (an
XEmbed tray icon). PyGObject from PyPI needs cairo headers to build, so the app uses Debian's
`python3-gi` instead: `expose_system_gi()` lets this interpreter import the `gi` package from
/usr/lib/python3/dist-packages when its compiled module matches this Python's ABI, without putting
the rest of that folder (Debian's numpy and friends) on sys.path. Without `gi` the xorg backend
runs: an icon with a default action (a click toggles "Pause camera") and no menu; the app says so once.
macOS and Windows have one backend each, which pystray picks itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SYSTEM_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")
#: top-level packages taken from the system folder (gi may import cairo for cairo-typed arguments)
SYSTEM_PACKAGES = ("gi", "cairo")

MENU_HELP = (
    "the tray icon has no menu: menus on Linux need PyGObject and AppIndicator "
    "(Debian/Ubuntu: `sudo apt install python3-gi gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1`). "
    "The app finds Debian's python3-gi by itself when its Python version matches this one; otherwise "
    "create the virtual environment with the system Python and `--system-site-packages`. "
    "Until then a click on the icon pauses or resumes the camera, and `vcam doctor` shows the state."
)


@dataclass(frozen=True)
class BackendChoice:
    """The backend to use (None: pystray's own default) and, when menus are unavailable, why."""

    name: str | None
    has_menu: bool
    warning: str | None = None


class _SystemPackageFinder(importlib.abc.MetaPathFinder):
    """Finds only the named top-level packages in one folder (after every normal finder failed)."""

    def __init__(self, folder: Path, names: Sequence[str]) -> None:
        self.folder = folder
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(self.folder)])


def _gi_importable() -> bool:
    try:
        import gi  # noqa: F401
    except ImportError:
        return False
    return True


def system_gi_abi_problem(folder: Path = SYSTEM_DIST_PACKAGES) -> str | None:
    """Why the system's `gi` cannot load in this interpreter (None when it can)."""
    package = folder / "gi"
    if not package.is_dir():
        return f"no PyGObject in {folder} (install python3-gi)"
    built = sorted(path.name for path in package.glob("_gi.*"))
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    if not any(name.endswith(suffix) for name in built for suffix in suffixes):
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return (
            f"the system's PyGObject ({', '.join(built) or 'no compiled module'}) is built for another Python "
            f"than this one ({version}, {sys.implementation.cache_tag})"
        )
    return None


def expose_system_gi(folder: Path = SYSTEM_DIST_PACKAGES) -> bool:
    """Make `import gi` work from the system's python3-gi when it is not importable already; returns success."""
    if _gi_importable():
        return True
    problem = system_gi_abi_problem(folder)
    if problem is not None:
        log.debug("not using the system's gi: %s", problem)
        return False
    if not any(isinstance(finder, _SystemPackageFinder) for finder in sys.meta_path):
        sys.meta_path.append(_SystemPackageFinder(folder, SYSTEM_PACKAGES))
    importlib.invalidate_caches()
    if _gi_importable():
        log.debug("using the system's gi from %s", folder)
        return True
    return False


def _gtk_usable() -> bool:
    try:
        import gi

        gi.require_version("Gtk", "3.0")
        from gi.repository import Gtk
    except (ImportError, ValueError) as error:
        log.debug("GTK 3 is not usable: %s", error)
        return False
    return bool(Gtk.init_check()[0])  # False without a display


def _appindicator_usable() -> bool:
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        log.debug("no session bus: AppIndicator cannot register")
        return False
    import gi

    for namespace in ("AyatanaAppIndicator3", "AppIndicator3"):
        try:
            gi.require_version(namespace, "0.1")
        except ValueError:
            continue
        return True
    return False


def choose_backend(platform: str | None = None) -> BackendChoice:
    """Pick the backend (honouring a PYSTRAY_BACKEND the user set) and export it for pystray's import."""
    requested = os.environ.get("PYSTRAY_BACKEND")
    linux_like = (platform if platform is not None else sys.platform) not in ("darwin", "win32")
    if requested:
        if requested in ("appindicator", "gtk"):
            expose_system_gi()
        has_menu = requested not in ("xorg",)
        return BackendChoice(requested, has_menu, None if has_menu else MENU_HELP)
    if not linux_like:
        return BackendChoice(None, True)
    if expose_system_gi() and _gtk_usable():
        name = "appindicator" if _appindicator_usable() else "gtk"
        choice = BackendChoice(name, True)
    else:
        choice = BackendChoice("xorg", False, MENU_HELP)
    os.environ["PYSTRAY_BACKEND"] = str(choice.name)
    return choice
