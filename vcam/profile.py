"""The auto profile: the model settings that hold a target content frame rate on this device.

A profile is one rung of a ladder of settings: the number of denoising steps T, the model size (512x288,
448x256, 384x216 for a 16:9 output of an SD1.5 style), the VAE that decodes (the full "kl" VAE or TAESD) and
the depth rate (`depth_every`: depth estimated on every N-th frame, reused in between). A rung's id names
them, e.g. "t2-512x288-taesd-d2"; depth on every frame has no suffix ("t1-448x256-taesd"), so the ids of
the ladder without depth rates still name the same settings. A knob the user set (`Config.user_set`: the
config file, the CLI or the control API) stays at the user's value on every rung; changing T keeps the
strength (the first index of `t_index_list`, `t_index_list_for_steps`).

The ladder (`build_ladder`), best first, gives up one thing per rung and keeps what it gave up:
1. the full VAE, then TAESD: TAESD is every style's own decoder, so the full VAE is a gain above the
   style's own settings and the first thing to give back;
2. depth at half the rate (`LOWER_DEPTH_RATES`): the smallest loss below the style's own settings. Depth
   changes slowly (at 15 fps a reused map is 67 ms old) and only guides the coarse structure, where each
   later step changes every pixel of every frame. It also saves the least (`DEPTH_COST`): going down, the
   controller often passes this rung for the next size (keeping the lower rate); going up, it fits a
   capacity just short of the style's own settings. Only a style with a depth prior has this knob
   (`StyleKnobs.depth`); a `depth_every` the user set pins it;
3. the next model size; 4. fewer steps, one by one; 5. the smaller sizes.
Each rung costs less than the one before it (`ProfileSettings.cost`).

`[style] profile`:
- "off": the style's own settings (the default);
- a rung id, e.g. "t1-448x256-taesd" or "t1-448x256-taesd-d2" (pinned);
- "auto": at load time, the best rung predicted to hold `[style] target_fps` from a short measurement
  (cached per device and style in the user cache folder); then, while the camera runs, `ProfileController
  .observe` steps down when the content rate stays under the target for `DOWN_AFTER_S` seconds and up when
  it has headroom (over `UP_ABOVE` x target) for `UP_AFTER_S`, with hysteresis: a rung left for being too
  slow is tried again only when the measured capacity grew by `RETRY_GAIN`. Each change is a style reload
  through the runtime's no-stall switch.

The controller predicts a rung's frame rate from a relative cost model (`ProfileSettings.cost`: pixels x
(steps + the VAE's, the per-frame work's and the depth's share, the depth's divided by `depth_every`)) scaled
by the capacity it measured at the current rung.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcam.clock import SYSTEM_CLOCK, Clock
from vcam.errors import ConfigError
from vcam.model.depth import MAX_DEPTH_EVERY
from vcam.model.scheduler import MAX_DENOISING_STEPS
from vcam.output_gate import seconds_given_way

if TYPE_CHECKING:
    import numpy as np

    from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: `[style] profile` values besides a rung id
PROFILE_MODES = ("off", "auto")
#: the VAEs a rung can decode with, fastest last
PROFILE_VAES = ("kl", "taesd")
#: the knobs a profile changes (a knob the user set is pinned)
KNOBS = ("steps", "size", "vae", "depth")
#: the config keys (under `style.` or `styles.NAME.`) that pin each knob when the user set them
PINNING_KEYS: dict[str, tuple[str, ...]] = {
    "steps": ("t_index_list", "steps"),
    "size": ("model_size", "size", "width", "height"),
    "vae": ("vae",),
    "depth": ("depth_every",),
}
#: the model's long side on each size rung, as a fraction of the style's own
SIZE_FACTORS = (1.0, 7 / 8, 6 / 8)
#: the depth rates below the style's own that the ladder tries (depth on every N-th frame)
LOWER_DEPTH_RATES = (2,)
#: the cost of the VAE, of the depth (DPT and the depth map's encode: 1 549 ms against one UNet step's 9 880 ms
#: in the README's real-size CPU figure) and of the rest of the per-frame work, in UNet steps
VAE_COST = {"kl": 1.0, "taesd": 0.2}
DEPTH_COST = 0.15
FRAME_COST = 0.35
#: default `[style] target_fps`
DEFAULT_TARGET_FPS = 15.0

#: the rate counts as under the target below `DOWN_BELOW` x target; held for `DOWN_AFTER_S`: a step down
DOWN_BELOW = 0.9
DOWN_AFTER_S = 3.0
#: headroom: over `UP_ABOVE` x target, held for `UP_AFTER_S`: a step up (when a better rung is predicted to hold)
UP_ABOVE = 1.3
UP_AFTER_S = 10.0
#: a rung is picked when it is predicted to hold `PICK_MARGIN` x target
PICK_MARGIN = 1.1
#: a rung left for being too slow is tried again only when the capacity is `RETRY_GAIN` x what it was then
RETRY_GAIN = 1.25
#: seconds after a switch before the rate is judged (the figures' window must hold only the new rung)
SETTLE_S = 3.5
#: translator calls timed by the load-time measurement (after its warmup)
MEASURE_CALLS = 6
#: the cache of load-time measurements, in the user cache folder
CACHE_FILE = "profiles.json"

_RUNG_ID = re.compile(
    rf"^t([1-{MAX_DENOISING_STEPS}])-(\d+)x(\d+)-(" + "|".join(PROFILE_VAES) + r")(?:-d([1-9]\d*))?$"
)


@dataclass(frozen=True)
class ProfileSettings:
    """One rung: denoising steps, model size (pixels, multiples of 8), decoding VAE and depth rate."""

    steps: int
    width: int
    height: int
    vae: str
    depth_every: int = 1

    @property
    def id(self) -> str:
        """The rung's name, e.g. "t2-512x288-taesd" or, with depth on every 2nd frame, "t2-512x288-taesd-d2" (what
        `[style] profile` pins)."""
        depth = f"-d{self.depth_every}" if self.depth_every > 1 else ""
        return f"t{self.steps}-{self.width}x{self.height}-{self.vae}{depth}"

    @classmethod
    def parse(cls, text: str) -> ProfileSettings:
        """The rung an id names (no "-dN": depth on every frame); ConfigError naming the value."""
        match = _RUNG_ID.match(text)
        width, height = (int(match[2]), int(match[3])) if match is not None else (0, 0)
        depth_every = int(match[5]) if match is not None and match[5] is not None else 1
        if match is None or width % 8 or height % 8 or width < 8 or height < 8 or match[5] == "1":
            raise ConfigError(
                f"style.profile = {text!r} is not allowed: use auto, off, or a profile like t2-512x288-taesd "
                f"(steps 1-{MAX_DENOISING_STEPS}, model width x height in multiples of 8, "
                f"vae {' or '.join(PROFILE_VAES)}), optionally -dN for depth on every N-th frame "
                f"(N 2-{MAX_DEPTH_EVERY}, e.g. t2-512x288-taesd-d2)"
            )
        if depth_every > MAX_DEPTH_EVERY:
            raise ConfigError(
                f"style.profile = {text!r} is not allowed: -d{depth_every} is over {MAX_DEPTH_EVERY}, "
                f"the longest depth interval (depth on every N-th frame, N 2-{MAX_DEPTH_EVERY})"
            )
        return cls(int(match[1]), width, height, match[4], depth_every)

    def cost(self) -> float:
        """Relative cost of one frame (one UNet step on one pixel is 1): the depth's share is paid on every
        `depth_every`-th frame only."""
        per_pixel = self.steps + VAE_COST[self.vae] + FRAME_COST + DEPTH_COST / self.depth_every
        return self.width * self.height * per_pixel


def check_profile(value: str) -> str:
    """The one `[style] profile` rule: "auto", "off" or a rung id; raises ConfigError naming the value."""
    if value not in PROFILE_MODES:
        ProfileSettings.parse(value)
    return value


def t_index_list_for_steps(base: Sequence[int], steps: int) -> tuple[int, ...]:
    """`base` (a style's `t_index_list`) with `steps` entries and the same strength: the first index stays, the
    last stays when there are two or more, the others spread evenly between (strictly increasing)."""
    first, last = int(base[0]), int(base[-1])
    if steps == len(base):
        return tuple(int(value) for value in base)
    if steps == 1:
        return (first,)
    last = max(last, first + steps - 1)
    values = [round(first + (last - first) * k / (steps - 1)) for k in range(steps)]
    for k in range(1, steps):
        values[k] = max(values[k], values[k - 1] + 1)
    return tuple(values)


def size_ladder(width: int, height: int) -> list[tuple[int, int]]:
    """The model sizes to try, largest first: the long side scaled by `SIZE_FACTORS`, the aspect kept,
    both sides rounded to multiples of 8 (512x288 -> 448x256 -> 384x216)."""
    sizes: list[tuple[int, int]] = []
    for factor in SIZE_FACTORS:
        size = (max(8, round(width * factor / 8) * 8), max(8, round(height * factor / 8) * 8))
        if size not in sizes:
            sizes.append(size)
    return sizes


@dataclass(frozen=True)
class StyleKnobs:
    """What a style offers the profile: its own settings, which knobs the user pinned, and whether it estimates
    depth (`depth`: a style without a depth prior has no depth rate to lower)."""

    default: ProfileSettings
    pinned: frozenset[str] = frozenset()
    depth: bool = True


def pinned_knobs(user_set: Container[str], style: str) -> frozenset[str]:
    """The knobs the user set for `style` (keys under `style.` or `styles.STYLE.`), which no profile changes."""
    pinned = set()
    for knob, keys in PINNING_KEYS.items():
        if any(f"style.{key}" in user_set or f"styles.{style}.{key}" in user_set for key in keys):
            pinned.add(knob)
    return frozenset(pinned)


def build_ladder(knobs: StyleKnobs) -> list[ProfileSettings]:
    """The rungs for a style, best first (the rule is the module docstring's): the full VAE, then TAESD, then depth
    at half the rate (a style with a depth prior), then the next size, then fewer steps one by one, then the
    smaller sizes. Pinned knobs keep the style's value on every rung."""
    top = knobs.default
    vaes = [top.vae] if "vae" in knobs.pinned else list(PROFILE_VAES)
    sizes = [(top.width, top.height)] if "size" in knobs.pinned else size_ladder(top.width, top.height)
    steps = [top.steps] if "steps" in knobs.pinned else list(range(top.steps, 0, -1))
    lower_depth = knobs.depth and "depth" not in knobs.pinned
    depth_rates = [rate for rate in LOWER_DEPTH_RATES if rate > top.depth_every] if lower_depth else []
    rungs = [replace(top, vae=vae) for vae in vaes]  # 1. the VAE
    for rate in depth_rates:  # 2. depth at a lower rate
        rungs.append(replace(rungs[-1], depth_every=rate))
    width, height = sizes[min(1, len(sizes) - 1)]
    rungs.append(replace(rungs[-1], width=width, height=height))  # 3. the next size
    for count in steps[1:]:  # 4. fewer steps
        rungs.append(replace(rungs[-1], steps=count))
    for width, height in sizes[2:]:  # 5. the smaller sizes
        rungs.append(replace(rungs[-1], width=width, height=height))
    unique: list[ProfileSettings] = []
    for rung in rungs:
        if rung not in unique:
            unique.append(rung)
    return unique


def best_rung(ladder: Sequence[ProfileSettings], capacity: float, target_fps: float) -> int:
    """The index of the best rung predicted to hold `target_fps` x `PICK_MARGIN` at `capacity` (cost units
    per second); the last (fastest) rung when none is."""
    for index, rung in enumerate(ladder):
        if capacity / rung.cost() >= target_fps * PICK_MARGIN:
            return index
    return len(ladder) - 1


# ---------------------------------------------------------------------- the load-time measurement, cached
class MeasurementCache:
    """Capacities measured at load time, per device and style (JSON in the user cache folder)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _file(self) -> Path:
        if self.path is not None:
            return self.path
        from vcam.paths import cache_dir

        return cache_dir() / CACHE_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self._file().read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.debug("ignoring the profile cache %s: %s", self._file(), error)
            return {}

    def get(self, key: str) -> float | None:
        with self._lock:
            entry = self._read().get(key)
        if isinstance(entry, dict) and isinstance(entry.get("capacity"), int | float) and entry["capacity"] > 0:
            return float(entry["capacity"])
        return None

    def put(self, key: str, capacity: float, rung: str) -> None:
        from vcam.config import write_text_atomically

        with self._lock:
            data = self._read()
            data[key] = {"capacity": capacity, "measured_at_rung": rung, "when": time.strftime("%Y-%m-%d")}
            try:
                write_text_atomically(json.dumps(data, indent=2, sort_keys=True) + "\n", self._file())
            except OSError as error:
                log.warning("cannot keep the profile measurement in %s: %s", self._file(), error)


def measure_capacity(
    translator: Translator, frames: Sequence[np.ndarray], settings: ProfileSettings, clock: Clock
) -> float:
    """Time `MEASURE_CALLS` calls on `frames` (after a warmup on them) and return the capacity they show
    (cost units per second); the translator is reset afterwards. Time spent giving way to the output
    (`vcam.output_gate`: a load's torch calls wait while a frame is sent) is not the model's and is left out."""
    translator.warmup(list(frames))
    start, given_way = clock.now(), seconds_given_way()
    for call in range(MEASURE_CALLS):
        translator(frames[call % len(frames)])
    seconds = max(clock.now() - start - (seconds_given_way() - given_way), 1e-6)
    translator.reset()
    return MEASURE_CALLS / seconds * settings.cost()


# ---------------------------------------------------------------------- the controller
TranslatorFactory = Callable[[str, "ProfileSettings | None"], "Translator"]


class ProfileController:
    """Chooses and adapts the profile of the styles the runtime loads (see the module docstring).

    `knobs_for(style)` says what a style offers (None: no knobs, e.g. classic looks or a remote style);
    `load(style, settings)` builds its translator (settings None: the style's own). `device(style)` names the
    device the style runs on, under which its measurements are cached. Thread-safe: `load` runs on the
    runtime's load threads, `observe` on its output thread, `set_mode` on any.
    """

    def __init__(
        self,
        mode: str,
        load: TranslatorFactory,
        knobs_for: Callable[[str], StyleKnobs | None],
        *,
        target_fps: float = DEFAULT_TARGET_FPS,
        device: Callable[[str], str] = lambda style: "cpu",
        cache: MeasurementCache | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.mode = check_profile(mode)
        self.target_fps = target_fps
        self._load = load
        self._knobs_for = knobs_for
        self._device = device
        self._cache = cache if cache is not None else MeasurementCache()
        self._clock = clock
        self._lock = threading.Lock()
        self._settings_of: dict[int, tuple[str, ProfileSettings | None]] = {}  # id(translator) -> (style, rung)
        self._ladders: dict[str, list[ProfileSettings]] = {}
        # the live style's rung and the adaptive state
        self._style: str | None = None
        self._current: ProfileSettings | None = None
        self._swapped_at = 0.0
        self._requested: ProfileSettings | None = None
        self._under_since: float | None = None
        self._over_since: float | None = None
        self._too_slow: dict[ProfileSettings, float] = {}  # rung -> capacity when it was left for being too slow
        self.changes: list[tuple[float, str, str]] = []  # (time, rung id, why): every automatic change

    # ------------------------------------------------------------------ loading
    def ladder(self, style: str, fresh: bool = False) -> list[ProfileSettings] | None:
        """The style's rungs, best first (None: no knobs); `fresh` builds them again (what the user pinned may have
        changed since)."""
        with self._lock:
            if style in self._ladders and not fresh:
                return self._ladders[style]
        knobs = self._knobs_for(style)
        if knobs is None:
            return None
        ladder = build_ladder(knobs)
        with self._lock:
            self._ladders[style] = ladder
        return ladder

    def load(self, style: str, settings: ProfileSettings | None, recent: Sequence[np.ndarray]) -> Translator:
        """The translator for `style`: at `settings` when given; else as the mode says (off: the style's own
        settings; a pinned rung; auto: the cached or freshly measured best rung)."""
        ladder = self.ladder(style, fresh=True)  # a setting changed through the control API reloads the style
        if ladder is None:
            settings = None  # a look without knobs (classic, remote): loaded as it is
        elif settings is None and self.mode == "auto":
            settings = self._load_time_choice(style, ladder, recent)
        elif settings is None and self.mode != "off":
            settings = ProfileSettings.parse(self.mode)
        translator = self._load(style, settings)
        with self._lock:
            self._settings_of[id(translator)] = (style, settings)
        return translator

    def _cache_key(self, style: str, ladder: Sequence[ProfileSettings]) -> str:
        return f"{self._device(style)}|{style}|{ladder[0].id}"

    def _load_time_choice(
        self, style: str, ladder: list[ProfileSettings], recent: Sequence[np.ndarray]
    ) -> ProfileSettings | None:
        """The cached or freshly measured best rung (None, the style's own settings, with nothing to measure on)."""
        key = self._cache_key(style, ladder)
        capacity = self._cache.get(key)
        if capacity is None:
            if not recent:
                return None
            probe = ladder[min(1, len(ladder) - 1)]  # TAESD at the style's size: the usual default
            translator = self._load(style, probe)
            try:
                capacity = measure_capacity(translator, recent, probe, self._clock)
            finally:
                translator.close()
            self._cache.put(key, capacity, probe.id)
            log.info("profile measurement for %r: %.1f fps at %s", style, capacity / probe.cost(), probe.id)
        chosen = ladder[best_rung(ladder, capacity, self.target_fps)]
        log.info("auto profile for %r: %s (predicted %.1f fps)", style, chosen.id, capacity / chosen.cost())
        return chosen

    def forget(self, translator: Translator) -> None:
        with self._lock:
            self._settings_of.pop(id(translator), None)

    # ------------------------------------------------------------------ the live style
    def on_swap(self, translator: Translator, now: float) -> None:
        """The runtime made `translator` live at `now`."""
        with self._lock:
            style, settings = self._settings_of.pop(id(translator), (getattr(translator, "name", ""), None))
            if style != self._style:
                self._too_slow.clear()
            self._style, self._current = style, settings
            self._swapped_at = now
            self._requested = None
            self._under_since = self._over_since = None

    def set_mode(self, mode: str) -> ProfileSettings | None:
        """Change the mode ("off", "auto" or a rung id); returns the rung to reload the live style at (None: its
        own settings, or no reload when it has no knobs)."""
        check_profile(mode)
        with self._lock:
            self.mode = mode
            self._too_slow.clear()
            self._under_since = self._over_since = None
            style = self._style
        if mode == "off" or style is None or self.ladder(style) is None:
            return None
        if mode == "auto":
            ladder = self.ladder(style) or []
            key = self._cache_key(style, ladder)
            capacity = self._cache.get(key)
            return ladder[best_rung(ladder, capacity, self.target_fps)] if capacity else self._current or ladder[0]
        return ProfileSettings.parse(mode)

    def describe(self) -> tuple[str, str, tuple[str, ...]]:
        """(mode, the live rung's id or "" when the style has no knobs or runs its own settings, the live style's
        rung ids best first)."""
        with self._lock:
            ladder = self._ladders.get(self._style or "", [])
            return self.mode, self._current.id if self._current is not None else "", tuple(r.id for r in ladder)

    # ------------------------------------------------------------------ adapting
    def observe(self, now: float, fps_content: float, steady: bool, call_ms: float = 0.0) -> ProfileSettings | None:
        """Judge the content rate at `now`; returns the rung to switch to, or None. `steady`: the runtime runs the
        live style (not loading, warming up, paused or reconnecting). `call_ms`: the model's time per frame
        (median), which predicts the other rungs' rates even when the camera's rate caps the content rate
        (0: predict from the content rate)."""
        with self._lock:
            current, style = self._current, self._style
            settle = now - self._swapped_at < SETTLE_S
            if self.mode != "auto" or current is None or style is None or self._requested is not None:
                return None
            if not steady or settle or fps_content <= 0:
                self._under_since = self._over_since = None
                return None
        ladder = self.ladder(style)
        if ladder is None or current not in ladder:
            return None
        index = ladder.index(current)
        capacity = (1000 / call_ms if call_ms > 0 else fps_content) * current.cost()
        with self._lock:
            if fps_content < self.target_fps * DOWN_BELOW:
                self._over_since = None
                self._under_since = self._under_since if self._under_since is not None else now
                if now - self._under_since < DOWN_AFTER_S or index == len(ladder) - 1:
                    return None
                below = ladder[index + 1 :]
                chosen = below[min(best_rung(below, capacity, self.target_fps), len(below) - 1)]
                self._too_slow[current] = capacity
                return self._request(now, chosen, f"{fps_content:.1f} fps is under the target {self.target_fps:g}")
            self._under_since = None
            if fps_content <= self.target_fps * UP_ABOVE or index == 0:
                self._over_since = None
                return None
            self._over_since = self._over_since if self._over_since is not None else now
            if now - self._over_since < UP_AFTER_S:
                return None
            for rung in ladder[:index]:
                left_at = self._too_slow.get(rung)
                if capacity / rung.cost() >= self.target_fps * PICK_MARGIN and (
                    left_at is None or capacity >= left_at * RETRY_GAIN
                ):
                    return self._request(now, rung, f"{fps_content:.1f} fps has headroom over {self.target_fps:g}")
            self._over_since = now  # no better rung would hold: judge again later
            return None

    def _request(self, now: float, rung: ProfileSettings, why: str) -> ProfileSettings:
        self._requested = rung
        self._under_since = self._over_since = None
        self.changes.append((now, rung.id, why))
        log.info("auto profile: %s (%s)", rung.id, why)
        return rung

    def request_failed(self) -> None:
        """The reload for a requested rung failed: judge again from the live rung."""
        with self._lock:
            self._requested = None
