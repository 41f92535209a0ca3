"""The process's garbage-collection policy while styles load: no cyclic collection, then a freeze.

With torch and diffusers loaded, a full collection walks ~400k objects and holds the GIL for ~150 ms: a
frozen camera for several frames. Loading a model allocates enough to trigger one. So loads run with the
collector off (`CollectorPause`), and `gc.freeze()` then moves everything alive (models, modules, imports)
out of the collector's view, which keeps later automatic collections short. Models are freed by
reference counting (no cycles), so nothing waits for a collection.
"""

from __future__ import annotations

import gc
import threading


class CollectorPause:
    """No cyclic garbage collection inside `with CollectorPause():`; what was built is frozen afterwards.

    Process-wide and nestable across threads: the collector is off while any pause is active, and its
    previous state comes back (with one `gc.freeze()`) when the last one ends.
    """

    _lock = threading.Lock()
    _depth = 0
    _was_enabled = True

    def __enter__(self) -> None:
        with CollectorPause._lock:
            if CollectorPause._depth == 0:
                CollectorPause._was_enabled = gc.isenabled()
                gc.disable()
            CollectorPause._depth += 1

    def __exit__(self, *exc: object) -> None:
        with CollectorPause._lock:
            CollectorPause._depth -= 1
            if CollectorPause._depth == 0:
                gc.freeze()
                if CollectorPause._was_enabled:
                    gc.enable()


def freeze_survivors() -> None:
    """Move every object alive now (imports, opened sources and sinks) out of the collector's walks."""
    gc.freeze()
