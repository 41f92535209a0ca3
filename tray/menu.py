"""The tray menu as a pure model: a `pystray.Menu` built from the runtime's status, the styles and callbacks.

Every item's text, check mark and enabled state is computed from one `MenuState` snapshot each
time the backend builds the menu (the app calls `icon.update_menu()` when the state changes).
Runtime commands go to a `RuntimeControl` (the controller's camera, `vcam.tray.controller.CameraHandle`);
everything else (downloads, the background image, opening folders, autostart, diagnostics, quit) goes to
`MenuActions`. A choice is saved in the config file only once the camera accepted it.

    Live2Diff Camera: running (Cartoon)      (disabled: the state line)
    Restart camera                            (only when the runtime failed)
    Open log                                  (the same: the camera's log)
    ---
    Style >            radio items; missing weights say so and download on click
    Segmentation >     off / person / background / blur / replace (asks for the image when none is set)
    Profile >          automatic / the style's own settings / each rung (only for styles with model settings)
    Pause camera       check item; the default action (a click on the icon where supported)
    ---
    Open preview
    Open settings folder
    Start at login     check item
    About / diagnostics
    ---
    Quit
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from vcam.desktop_entry import APP_TITLE
from vcam.status import Status

if TYPE_CHECKING:
    import pystray

log = logging.getLogger(__name__)


#: segmentation modes and their menu labels, in menu order
SEGMENT_LABELS: dict[str, str] = {
    "off": "Off",
    "person": "Style the person only",
    "background": "Style the background only",
    "blur": "Blur the background",
    "replace": "Replace the background",
}

#: what the state line says for each runtime state
STATE_WORDS: dict[str, str] = {
    "starting": "starting",
    "warming_up": "warming up",
    "running": "running",
    "loading_style": "loading a style",
    "paused": "paused",
    "reconnecting": "reconnecting to the camera",
    "restarting": "camera restarting",
    "error": "error",
    "stopped": "stopped",
}

LABEL_RESTART = "Restart camera"
LABEL_OPEN_LOG = "Open log"
LABEL_STYLE = "Style"
LABEL_SEGMENT = "Segmentation"
LABEL_PROFILE = "Profile"
#: the Profile submenu's fixed items: `[style] profile` value -> label
PROFILE_LABELS: dict[str, str] = {"auto": "Automatic (hold the frame rate)", "off": "The style's own settings"}
LABEL_PAUSE = "Pause camera"
LABEL_PREVIEW = "Open preview"
LABEL_SETTINGS = "Open settings folder"
LABEL_AUTOSTART = "Start at login"
LABEL_ABOUT = "About / diagnostics"
LABEL_QUIT = "Quit"


class RuntimeControl(Protocol):
    """The commands the menu sends to the camera (`vcam.tray.controller.CameraHandle` extends it)."""

    def set_style(self, name: str) -> None: ...

    def set_segment(self, mode: str) -> None: ...

    def set_profile(self, mode: str) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> Status: ...


class MenuStyle(Protocol):
    """One style as the menu needs it (`vcam.styles.StyleInfo` satisfies it)."""

    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def ready(self) -> bool: ...


class MenuActions(Protocol):
    """The menu's actions that are not runtime commands (implemented by the tray app)."""

    def download_style(self, name: str) -> None: ...

    def save_setting(self, key: str, value: Any) -> None: ...

    def replace_background(self) -> None: ...

    def restart_runtime(self) -> None: ...

    def open_log(self) -> None: ...

    def open_preview(self) -> None: ...

    def open_settings_folder(self) -> None: ...

    def set_autostart(self, enabled: bool) -> None: ...

    def show_about(self) -> None: ...

    def quit(self) -> None: ...


@dataclass(frozen=True)
class MenuState:
    """Everything the menu shows, in one snapshot.

    Attributes:
        status: the runtime's status (a default `Status` before the runtime exists).
        styles: the styles to offer, in menu order.
        runtime_failed: why the runtime died or could not start (None while it is alive); the menu
            then offers "Restart camera" and disables the runtime commands.
        downloads: style name -> fraction done (0..1) for weight downloads under way.
        download_errors: style name -> why its last download failed.
        autostart: whether "Start at login" is on.
    """

    status: Status = field(default_factory=Status)
    styles: tuple[MenuStyle, ...] = ()
    runtime_failed: str | None = None
    downloads: Mapping[str, float] = field(default_factory=dict)
    download_errors: Mapping[str, str] = field(default_factory=dict)
    autostart: bool = False

    @property
    def runtime_usable(self) -> bool:
        return self.runtime_failed is None and self.status.state not in ("error", "stopped")

    def menu_key(self) -> tuple[Any, ...]:
        """What the menu shows; the app rebuilds the menu only when this changes (not on every fps tick)."""
        status = self.status
        return (
            status.state,
            status.style,
            status.segment,
            status.styles_loading,
            status.profile,
            status.profiles,
            status.last_error,
            status.preview_url,
            tuple((style.name, style.title, style.ready) for style in self.styles),
            self.runtime_failed,
            tuple(sorted((name, int(fraction * 100)) for name, fraction in self.downloads.items())),
            tuple(sorted(self.download_errors.items())),
            self.autostart,
        )


def style_title(state: MenuState, name: str) -> str:
    """The title of style `name` (the name itself when the style is not listed)."""
    for style in state.styles:
        if style.name == name:
            return style.title
    return name


def state_line(state: MenuState) -> str:
    """The first, disabled, menu line: what the camera is doing."""
    if state.runtime_failed is not None:
        return f"{APP_TITLE}: stopped by an error"
    status = state.status
    words = STATE_WORDS.get(status.state, status.state)
    return f"{APP_TITLE}: {words} ({style_title(state, status.style)})"


def style_label(state: MenuState, style: MenuStyle) -> str:
    """A style item's text: its title, marked when its weights are missing, downloading or loading."""
    if style.name in state.downloads:
        return f"{style.title} (downloading {int(state.downloads[style.name] * 100)}%)"
    if style.name in state.download_errors:
        return f"{style.title} (download failed: click to retry)"
    if not style.ready:
        return f"{style.title} (not downloaded: click to download)"
    if style.name in state.status.styles_loading:
        return f"{style.title} (loading...)"
    return style.title


def build_menu(
    get_state: Callable[[], MenuState],
    get_runtime: Callable[[], RuntimeControl | None],
    actions: MenuActions,
) -> pystray.Menu:
    """The tray menu; its items are recomputed from `get_state()` every time the backend builds it.

    `get_runtime()` returns the runtime to command (None while there is none: the runtime items
    are then disabled). Exceptions from commands are logged and shown by the app's watcher through
    the status; the menu itself never raises into the backend's event loop.
    """
    import pystray

    def runtime_command(command: Callable[[RuntimeControl], None], description: str) -> bool:
        """Send `command`; True when the camera accepted it."""
        runtime = get_runtime()
        if runtime is None:
            log.warning("cannot %s: the camera is not running", description)
            return False
        try:
            command(runtime)
        except Exception as error:  # a refused command must not kill the menu's event loop
            log.warning("cannot %s: %s", description, error)
            return False
        return True

    def choose_style(name: str) -> None:
        if runtime_command(lambda runtime: runtime.set_style(name), f"switch to style {name!r}"):
            actions.save_setting("style.name", name)

    def choose_segment(mode: str) -> None:
        if mode == "replace":  # needs an image: the app asks for one when none is set
            actions.replace_background()
        elif runtime_command(lambda runtime: runtime.set_segment(mode), f"set segmentation to {mode!r}"):
            actions.save_setting("segment.mode", mode)

    def choose_profile(mode: str) -> None:
        runtime_command(lambda runtime: runtime.set_profile(mode), f"set the profile to {mode!r}")
        actions.save_setting("style.profile", mode)

    def profile_item(mode: str, label: str) -> pystray.MenuItem:
        return pystray.MenuItem(
            label,
            lambda icon, item: choose_profile(mode),
            checked=lambda item: get_state().status.profile == mode,
            radio=True,
            enabled=lambda item: get_state().runtime_usable,
        )

    def profile_items() -> Iterator[pystray.MenuItem]:
        status = get_state().status
        for mode in (*PROFILE_LABELS, *status.profiles):
            label = PROFILE_LABELS.get(mode, mode)
            if mode == status.profile_settings and status.profile == "auto":
                label += " (now)"
            yield profile_item(mode, label)

    def toggle_pause() -> None:
        if get_state().status.state == "paused":
            runtime_command(lambda runtime: runtime.resume(), "resume the camera")
        else:
            runtime_command(lambda runtime: runtime.pause(), "pause the camera")

    def style_item(style: MenuStyle) -> pystray.MenuItem:
        name = style.name

        def activate(icon: Any, item: Any) -> None:
            state = get_state()
            entry = next((s for s in state.styles if s.name == name), style)
            if entry.ready:
                choose_style(name)
            else:
                actions.download_style(name)

        return pystray.MenuItem(
            lambda item: style_label(get_state(), style),
            activate,
            checked=lambda item: get_state().status.style == name,
            radio=True,
            enabled=lambda item: name not in get_state().downloads and (get_state().runtime_usable or not style.ready),
        )

    def style_items() -> Iterator[pystray.MenuItem]:
        return (style_item(style) for style in get_state().styles)

    def segment_item(mode: str, label: str) -> pystray.MenuItem:
        return pystray.MenuItem(
            label,
            lambda icon, item: choose_segment(mode),
            checked=lambda item: get_state().status.segment == mode,
            radio=True,
            enabled=lambda item: get_state().runtime_usable,
        )

    return pystray.Menu(
        pystray.MenuItem(lambda item: state_line(get_state()), None, enabled=False),
        pystray.MenuItem(
            LABEL_RESTART,
            lambda icon, item: actions.restart_runtime(),
            visible=lambda item: not get_state().runtime_usable,
        ),
        pystray.MenuItem(
            LABEL_OPEN_LOG,
            lambda icon, item: actions.open_log(),
            visible=lambda item: not get_state().runtime_usable,
        ),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem(LABEL_STYLE, pystray.Menu(style_items)),
        pystray.MenuItem(
            LABEL_SEGMENT, pystray.Menu(*(segment_item(mode, label) for mode, label in SEGMENT_LABELS.items()))
        ),
        pystray.MenuItem(
            LABEL_PROFILE, pystray.Menu(profile_items), visible=lambda item: bool(get_state().status.profiles)
        ),
        pystray.MenuItem(
            LABEL_PAUSE,
            lambda icon, item: toggle_pause(),
            checked=lambda item: get_state().status.state == "paused",
            enabled=lambda item: get_state().runtime_usable,
            default=True,
        ),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem(
            LABEL_PREVIEW,
            lambda icon, item: actions.open_preview(),
            enabled=lambda item: get_state().runtime_usable and get_state().status.preview_url is not None,
        ),
        pystray.MenuItem(LABEL_SETTINGS, lambda icon, item: actions.open_settings_folder()),
        pystray.MenuItem(
            LABEL_AUTOSTART,
            lambda icon, item: actions.set_autostart(not get_state().autostart),
            checked=lambda item: get_state().autostart,
        ),
        pystray.MenuItem(LABEL_ABOUT, lambda icon, item: actions.show_about()),
        pystray.Menu.SEPARATOR,
        pystray.MenuItem(LABEL_QUIT, lambda icon, item: actions.quit()),
    )


def find_item(menu: pystray.Menu, *path: str) -> pystray.MenuItem:
    """The visible item reached by `path`: labels (or label prefixes) of a submenu chain, e.g. ("Style", "Cartoon")."""
    items: Sequence[pystray.MenuItem] = tuple(menu)
    for depth, label in enumerate(path):
        found = next((item for item in items if item.text == label), None)
        if found is None:
            found = next((item for item in items if item.text.startswith(label)), None)
        if found is None:
            shown = ", ".join(repr(item.text) for item in items)
            raise KeyError(f"no menu item {label!r} at {' > '.join(path[:depth]) or 'the top'}; items: {shown}")
        if depth == len(path) - 1:
            return found
        if found.submenu is None:
            raise KeyError(f"menu item {label!r} has no submenu")
        items = tuple(found.submenu)
    raise KeyError("an empty menu path")


#: Windows truncates tray tooltips at 127 characters
TOOLTIP_MAX = 127


def tooltip(state: MenuState) -> str:
    """The icon's tooltip: the state, the style, the frame rate (new styled frames of those sent, once measured),
    the latency and the audio delay to set."""
    status = state.status
    title = style_title(state, status.style)
    fps = f"{status.fps_out:.0f} fps"
    if status.fps_content > 0 and status.latency_ms_p50 > 0:
        fps = (
            f"{status.fps_content:.0f} new of {status.fps_out:.0f} fps, {status.latency_ms_p50:.0f} ms late "
            f"(delay audio {status.audio_delay_ms} ms)"
        )
    if state.runtime_failed is not None:
        text = f"{APP_TITLE}: error: {state.runtime_failed}"
    elif status.state == "paused":
        text = f"{APP_TITLE}: paused ({title})"
    elif status.state == "running" and not status.styles_loading:
        text = f"{APP_TITLE}: {title}, {fps}"
    elif status.styles_loading:
        loading = ", ".join(style_title(state, name) for name in status.styles_loading)
        text = f"{APP_TITLE}: loading {loading} (showing {title}, {fps})"
    else:
        text = f"{APP_TITLE}: {STATE_WORDS.get(status.state, status.state)} ({title}, {fps})"
    return text if len(text) <= TOOLTIP_MAX else text[: TOOLTIP_MAX - 3] + "..."
