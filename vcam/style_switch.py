"""Style switching for the frame loop: background loads that never freeze the output, and the time-based crossfade.

A style loads in its own thread while the current one keeps running (`StyleLoads`). What froze the output during a
load was never the load's own work, which releases the GIL in torch's kernels and file reads, but a few long C calls
that hold it: importing the model stack the first time (dlopen of libtorch with its static initialisers,
torch._C's bindings, torch.distributed's operator tables under diffusers: 200-500 ms each on a 2-core machine)
and the collector walking every object. So:

- `preload_model_stack()` imports every module a model load needs before the frame loop's output starts (the
  runtime's `preload`), with torch's shared libraries opened first through a foreign call that releases the GIL;
  a later load imports nothing;
- a load runs under `loader_policy()`: the collector off (`vcam.gc_policy.CollectorPause`), the loading thread
  with its OpenMP workers at a lower CPU priority (`vcam.model.priority`): the runtime's threads get a core first;
  and its torch calls waiting while the output sends a frame (`vcam.output_gate`): the GIL is free for it then;
- at real size, reading the weights holds the GIL only briefly: checkpoints are memory-mapped (no unpickling of
  tensor data), the UNet is built without init and given its tensors one copy at a time
  (`vcam.model.materialize`);
- the loader holds no lock the output thread takes: it hands its result over under the runtime's lock, briefly.

The crossfade runs on the output side by time (`Crossfade`, `CROSSFADE_S`), whatever the model's speed.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vcam.errors import UserError
from vcam.gc_policy import CollectorPause
from vcam.model.priority import lower_thread_priority
from vcam.output_gate import OutputGate, giving_way

if TYPE_CHECKING:
    from vcam.profile import ProfileController, ProfileSettings
    from vcam.translators.base import Translator

log = logging.getLogger(__name__)

#: how many recent camera frames a new style is warmed on (a load waits until it has them)
RECENT_FRAMES = 8
#: seconds over which the output blends from the old look to the new one, from the new look's first frame
CROSSFADE_S = 0.3
#: torch's shared libraries, in dependency order, opened without the GIL before `import torch`
TORCH_LIBRARIES = ("libgomp.so.1", "libc10.so", "libtorch_cpu.so", "libtorch.so", "libtorch_global_deps.so")
#: (module, attribute or None) a model load imports; attributes of diffusers' and transformers' lazy modules
#: import their submodules
MODEL_STACK_IMPORTS: tuple[tuple[str, str | None], ...] = (
    ("cv2", None),
    ("platformdirs", "user_cache_dir"),  # `vcam.paths`: the folders a load reads and writes
    ("torch", None),
    ("torch.nn.functional", None),
    ("safetensors.torch", None),
    ("accelerate", "init_empty_weights"),  # `vcam.model.materialize`: models built without init
    ("diffusers", "LCMScheduler"),
    ("diffusers", "AutoencoderKL"),
    ("diffusers", "AutoencoderTiny"),
    ("diffusers", "UNet2DConditionModel"),
    ("diffusers", "UNetMotionModel"),
    ("diffusers.models.attention_processor", None),
    ("diffusers.loaders.single_file_utils", None),
    ("diffusers.loaders.lora_pipeline", None),
    ("transformers", "CLIPTextConfig"),
    ("transformers", "CLIPTextModel"),
    ("transformers", "CLIPTokenizer"),
    ("transformers", "DPTConfig"),
    ("transformers", "DPTForDepthEstimation"),
    ("numpy.core.multiarray", None),  # torch.load's safe globals
    ("vcam.model.depth", None),
    ("vcam.model.loading", None),
    ("vcam.model.pipeline", None),
    ("vcam.model.pool", None),
    ("vcam.model.text", None),
    ("vcam.model.text_lora", None),
    ("vcam.model.tiny", None),
    ("vcam.model.vae", None),
    ("vcam.model.weights", None),
    ("vcam.run_settings", None),
    ("vcam.store.store", None),
    ("vcam.translators.classic", None),
    ("vcam.translators.live2diff", None),
    ("vcam.translators.passthrough", None),
)
#: modules a model load imports when they are installed (`vcam.model.step_backends.resolve_model_backend`)
OPTIONAL_MODEL_STACK_IMPORTS = ("onnxruntime",)


def model_stack_installed() -> bool:
    """True when the model libraries (torch, diffusers, transformers) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers", "transformers"))


def _open_torch_libraries() -> None:
    """dlopen torch's libraries (their static initialisers register thousands of operators) via libc through
    ctypes, which releases the GIL for a foreign call; `import torch` then finds them loaded."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return
    folder = Path(spec.origin).parent / "lib"
    try:
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
    except (OSError, AttributeError):  # not a dlopen platform: `import torch` opens them itself
        return
    dlopen.restype = ctypes.c_void_p
    dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    for name in TORCH_LIBRARIES:
        path = folder / name
        if path.exists() and not dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_GLOBAL):
            log.debug("could not preload %s; import torch will", path)


def preload_model_stack() -> None:
    """Import every module a model load needs (call before the output starts: imports hold the GIL)."""
    if "torch" not in sys.modules:
        _open_torch_libraries()
    for module_name, attribute in MODEL_STACK_IMPORTS:
        module = importlib.import_module(module_name)
        if attribute is not None:
            getattr(module, attribute)
    for module_name in OPTIONAL_MODEL_STACK_IMPORTS:
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name)
    log.debug("model stack imported")


@contextmanager
def loader_policy(gate: OutputGate | None = None) -> Iterator[None]:
    """How a style load runs in its own thread: imports done beforehand, the collector paused (its walks hold the
    GIL), the thread at a lower CPU priority (`lower_thread_priority`: the thread ends with the load) and, with
    the runtime's `gate`, its torch calls giving way to the output's frames (`vcam.output_gate.giving_way`)."""
    lower_thread_priority()
    with CollectorPause(), giving_way(gate) if gate is not None else nullcontext():
        yield


class Crossfade:
    """Blends the output from a still of the old look into the new look over `seconds`, by the output's clock."""

    def __init__(self, seconds: float = CROSSFADE_S) -> None:
        self.seconds = seconds
        self._from: np.ndarray | None = None  # [h, w, 3] uint8: the last frame shown before the new look
        self._started_at = 0.0
        self.switch = 0  # which switch the fade belongs to (the caller's number; 0: none yet)

    def start(self, last_frame: np.ndarray, now: float) -> None:
        """The new look's first frame is shown at `now`: fade in from `last_frame`."""
        self._from, self._started_at = last_frame, now

    def cancel(self) -> None:
        self._from = None

    def weight(self, now: float) -> float:
        """The new look's weight at `now`: 0.0 at `start`, rising linearly to 1.0 after `seconds`."""
        if self._from is None:
            return 1.0
        return min(1.0, max(0.0, (now - self._started_at) / self.seconds))

    def apply(self, image: np.ndarray, now: float) -> np.ndarray:
        """`image` (the new look) blended with the old look's last frame at `now`'s weight."""
        alpha = self.weight(now)
        if self._from is None or alpha >= 1.0 or self._from.shape != image.shape:
            self.cancel()
            return image
        import cv2

        # one pass over uint8 images, no float temporaries: numpy's float32 blend of 1280x720 took the output
        # thread 130 ms of CPU (page faults of its 11 MB temporaries) on a loaded 2-core machine, a 270 ms gap
        return cv2.addWeighted(self._from, 1.0 - alpha, image, alpha, 0.0)


class StyleLoads:
    """Loads styles in background threads (under `loader_policy`); the newest request wins.

    A new style is warmed on the latest `RECENT_FRAMES` real camera frames (`note_frame`), waiting for them at
    start-up. With a `profile` the style loads through it (`ProfileController.load`: the profile's settings,
    measured on those frames); without one through `loader`. A finished load waits as the pending translator
    until the frame loop takes it (`take_pending`). The lock is held only to hand frames and results over: the
    runtime's threads never wait on a load. When the configured style fails to load before anything else was
    shown, the `fallback` look is loaded instead.
    """

    def __init__(
        self,
        loader: Callable[[str], Translator],
        on_done: Callable[[], None],
        on_failed: Callable[[str, bool], None],
        close: Callable[[Translator], None],
        fallback: tuple[str, str, Callable[[], bool]],
        profile: ProfileController | None = None,
        gate: OutputGate | None = None,
    ) -> None:
        """`on_done()`: a load finished; `on_failed(error, falling_back)`; `close(translator)`: free one;
        `fallback`: (configured style, fallback style, "is the plain camera shown?"); `gate`: the output's, which
        the loads give way to."""
        self._fallback = fallback
        self._loader = loader
        self._profile = profile
        self._gate = gate
        self._recent: deque[np.ndarray] = deque(maxlen=RECENT_FRAMES)
        self._on_done = on_done
        self._on_failed = on_failed
        self._close = close
        self._lock = threading.Lock()
        self._frames_changed = threading.Condition(self._lock)
        self._generation = 0
        self._loading: set[str] = set()
        self._pending: tuple[str, Translator] | None = None
        self._closed = False

    def request(self, name: str, settings: ProfileSettings | None = None) -> None:
        """Load style `name` (at the profile `settings`, else as the profile mode says) in a new thread; a later
        request supersedes it."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._loading.add(name)
        thread = threading.Thread(
            target=self._load, args=(generation, name, settings), name=f"vcam-load-{name}", daemon=True
        )
        thread.start()

    def note_frame(self, image: np.ndarray) -> None:
        """A camera frame [h, w, 3] at the output size, newest last: what a new style is warmed on."""
        with self._lock:
            self._recent.append(image)
            self._frames_changed.notify_all()

    def forget_frames(self) -> None:
        """A break in the stream: frames from before it never warm a style."""
        with self._lock:
            self._recent.clear()

    def _warmup_frames(self, generation: int) -> list[np.ndarray]:
        """The latest `RECENT_FRAMES` camera frames, waiting for them (at start-up: the first real frames)."""
        with self._lock:
            while len(self._recent) < RECENT_FRAMES and generation == self._generation and not self._closed:
                self._frames_changed.wait(0.1)
            return list(self._recent)

    def loading(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._loading))

    @property
    def has_pending(self) -> bool:
        return self._pending is not None

    def pending_translator(self) -> Translator | None:
        with self._lock:
            return self._pending[1] if self._pending is not None else None

    def take_pending(self) -> tuple[str, Translator] | None:
        """The finished load's (name, translator), once; None when there is none."""
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    def close(self) -> None:
        """No more swaps: a pending translator is freed, later loads are freed as they finish."""
        with self._lock:
            self._closed = True
            self._frames_changed.notify_all()
            pending, self._pending = self._pending, None
        if pending is not None:
            self._close(pending[1])

    def _load(self, generation: int, name: str, settings: ProfileSettings | None) -> None:
        try:
            with loader_policy(self._gate):
                profile = self._profile
                if profile is not None:  # the profile measures its choice on the warmup frames
                    frames = self._warmup_frames(generation)
                    translator = profile.load(name, settings, frames)
                else:
                    translator = self._loader(name)
                    frames = self._warmup_frames(generation)
                if frames:
                    translator.warmup(frames)  # the new style's temporal state from the latest camera frames
                if self._gate is not None:
                    translator.give_way_to(self._gate)  # its later background work too (a new prompt's warmup)
        except Exception as error:
            message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            if not isinstance(error, UserError):
                log.exception("style %r failed to load", name)
            self._failed(generation, name, message)
            return
        with self._lock:
            self._loading.discard(name)
            if generation != self._generation or self._closed:
                stale: Translator | None = translator
            else:
                stale = self._pending[1] if self._pending is not None else None
                self._pending = (name, translator)
        if stale is not None:
            self._close(stale)
        self._on_done()

    def _failed(self, generation: int, name: str, message: str) -> None:
        log.warning("style %r could not be loaded: %s", name, message)
        configured, fallback, plain_camera_shown = self._fallback
        with self._lock:
            self._loading.discard(name)
            current = generation == self._generation and not self._closed
        fall_back = current and plain_camera_shown() and name == configured and name != fallback
        self._on_failed(f"style {name!r} could not be loaded: {message}", fall_back)
        if fall_back:
            log.warning("showing the classic %r look meanwhile", fallback)
            self.request(fallback)
