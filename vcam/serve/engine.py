"""The server's engine: one worker thread steps every client's stream, one UNet call per shared UNet per tick.

Each tick takes the waiting input of every client, runs the clients on pipelines through
`vcam.model.batch.batched_step` (clients on the same UNet share one call, each with its own caches) or, with
`batch=False`, one `step` per client, runs the others' translators, and hands each output to its client.
A client whose style fails is told so (its `error`) and keeps getting its own frames back unstyled.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vcam.errors import RemoteError
from vcam.serve.control import BadControl, t_index_list_for_strength
from vcam.serve.streams import ClientStream, StyledFrame, StyleState

if TYPE_CHECKING:
    from vcam.config import Config
    from vcam.model.pipeline import StreamPipeline

log = logging.getLogger(__name__)


class TooManyClients(RemoteError):
    """The server has `--max-clients` clients already."""


class StyleFactory:
    """Makes one client's `StyleState` for a style name: its own stream state, shared models where possible.

    The tiny test model is built once and every client gets a sibling pipeline on its UNet; diffusion styles
    come from the model pool (`Live2DiffTranslator.from_style`), which shares a UNet between clients of the
    same base and LoRA; classic looks and passthrough are plain translators.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._tiny: StreamPipeline | None = None

    def check(self, name: str) -> None:
        """Raise a UserError for a style name that does not exist."""
        from vcam.styles import find_style

        find_style(name, self.config)

    def make(self, name: str, t_index_list: tuple[int, ...] | None = None) -> StyleState:
        """A new stream state on style `name`; `t_index_list` replaces a diffusion style's own steps."""
        from vcam.styles import find_style
        from vcam.translators.classic import CLASSIC_STYLES

        if name == "passthrough" or name in CLASSIC_STYLES:
            if t_index_list is not None:
                raise BadControl(f"style {name!r} is not a diffusion style: it has no strength or t_index_list")
            from vcam.styles import load_translator

            return StyleState(name=name, translator=load_translator(name, self.config))
        info = find_style(name, self.config)
        from vcam.translators.live2diff import FrameFitter

        if info.kind == "test":
            with self._lock:
                if self._tiny is None:
                    from vcam.model.tiny import build_tiny_pipeline

                    self._tiny = build_tiny_pipeline(seed=self.config.style.seed)
                if t_index_list is None:
                    pipeline = self._tiny.sibling()
                else:
                    from vcam.model.scheduler import build_stream_schedule

                    pipeline = self._tiny.sibling(schedule=build_stream_schedule(t_index_list))
            return StyleState(name=name, pipeline=pipeline, fitter=FrameFitter(pipeline.width, pipeline.height))
        from vcam.store.store import ModelStore
        from vcam.translators.live2diff import Live2DiffTranslator

        store = ModelStore.from_config(self.config, strict=False)
        paths = store.path(name)
        if t_index_list is not None:
            paths = dataclasses.replace(paths, t_index_list=t_index_list)  # the pool shares the UNet still
        translator = Live2DiffTranslator.from_style(paths, self.config)
        return StyleState(name=name, pipeline=translator.pipeline, translator=translator, fitter=translator.fitter)


class Engine:
    """Steps the streams of all clients; thread-safe `add`/`remove`; `start`/`stop` its thread."""

    def __init__(self, factory: StyleFactory, max_clients: int = 4, batch: bool = True) -> None:
        self.factory = factory
        self.max_clients = max_clients
        self.batch = batch
        self._clients: dict[str, ClientStream] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.unet_calls_saved = 0

    # -- clients ---------------------------------------------------------------------------------------------

    def reserve(self) -> None:
        """Raise TooManyClients when no client can join now."""
        with self._lock:
            if len(self._clients) >= self.max_clients:
                raise TooManyClients(
                    f"this server is full: it serves at most {self.max_clients} clients (--max-clients); "
                    "try again later"
                )

    def add(self, client_id: str, style: str, deliver: Callable[[StyledFrame], None]) -> ClientStream:
        """A new client's stream on `style` (slow for a diffusion style not loaded yet)."""
        self.reserve()
        state = self.factory.make(style)
        stream = ClientStream(client_id, state, deliver)
        with self._lock:
            if len(self._clients) >= self.max_clients:
                stream.close()
                raise TooManyClients(f"this server is full: it serves at most {self.max_clients} clients")
            self._clients[client_id] = stream
        log.info("client %s joined (style %s); %d clients", client_id[:8], style, len(self._clients))
        return stream

    def remove(self, client_id: str) -> None:
        """Drop a client and free its stream state (idempotent)."""
        with self._lock:
            stream = self._clients.pop(client_id, None)
        if stream is not None:
            stream.close()
            log.info("client %s left; %d clients", client_id[:8], len(self._clients))

    def set_style(self, client_id: str, name: str, t_index_list: tuple[int, ...] | None = None) -> StyleState:
        """Switch one client's style (loads now: call it off the network loop); it takes effect at the client's
        next step. `t_index_list`: other steps than the style's own. Returns the new state."""
        self.factory.check(name)
        state = self.factory.make(name, t_index_list)
        stream = self.client(client_id)
        if stream is None:
            state.close()
            return state
        stream.replace_style(state)
        return state

    def set_steps(
        self, client_id: str, strength: float | None = None, t_index_list: tuple[int, ...] | None = None
    ) -> StyleState:
        """Restart one client's diffusion style with a `strength` or a `t_index_list` (its prompt kept)."""
        stream = self.client(client_id)
        if stream is None:
            raise BadControl("this client is gone")
        current = stream.style
        if current.pipeline is None:
            raise BadControl(f"style {current.name!r} is not a diffusion style: it has no strength or t_index_list")
        if strength is not None:
            t_index_list = t_index_list_for_strength(strength, current.pipeline.schedule.t_index_list)
        state = self.factory.make(current.name, t_index_list)
        if state.pipeline is not None and state.pipeline.prompt != current.pipeline.prompt:
            state.pipeline.set_prompt(current.pipeline.prompt, background=False)  # not warmed up yet: at once
        stream.replace_style(state)
        return state

    def client(self, client_id: str) -> ClientStream | None:
        with self._lock:
            return self._clients.get(client_id)

    def clients(self) -> list[ClientStream]:
        with self._lock:
            return list(self._clients.values())

    def notify(self) -> None:
        """Wake the worker (a client pushed a frame)."""
        with self._wake:
            self._wake.notify()

    # -- the worker ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vcam-serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for stream in self.clients():
            self.remove(stream.client_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.tick():
                with self._wake:
                    self._wake.wait(timeout=0.05)

    def tick(self) -> bool:
        """Step every client that has an input waiting; False when none had."""
        work: list[tuple[ClientStream, Any, int, float]] = []
        for stream in self.clients():
            taken = stream.take()
            if taken is not None:
                work.append((stream, *taken))
        if not work:
            return False
        self.ticks += 1
        on_pipelines = [item for item in work if item[0].style.pipeline is not None]
        others = [item for item in work if item[0].style.pipeline is None]
        if on_pipelines:
            self._step_pipelines(on_pipelines)
        for stream, image, pts, arrival in others:
            translator = stream.style.translator
            stream.label(pts, arrival)
            try:
                output = translator(image) if translator is not None else image
                stream.finish_translator(image, output, translator.latency_frames if translator else 0)
            except Exception as error:
                self._client_failed(stream, image, error)
        return True

    def _step_pipelines(self, work: list[tuple[ClientStream, Any, int, float]]) -> None:
        from vcam.model.batch import batch_key, batched_step

        for stream, _, pts, arrival in work:
            stream.label(pts, arrival)
        pipelines = [stream.style.pipeline for stream, *_ in work]
        inputs = [stream.model_input(image) for stream, image, *_ in work]
        try:
            if self.batch:
                results = batched_step(pipelines, inputs)  # type: ignore[arg-type]
                keys = {batch_key(pipeline) for pipeline in pipelines if pipeline is not None and pipeline.warmed_up}
                self.unet_calls_saved += max(0, sum(1 for p in pipelines if p and p.warmed_up) - len(keys))
            else:
                results = [pipeline.step(image) for pipeline, image in zip(pipelines, inputs, strict=True)]  # type: ignore[union-attr]
        except Exception as error:
            for stream, image, *_ in work:
                self._client_failed(stream, image, error)
            return
        for (stream, image, *_), found in zip(work, results, strict=True):
            stream.finish_pipeline(image, found)

    def _client_failed(self, stream: ClientStream, image: Any, error: Exception) -> None:
        log.exception("styling client %s's frame failed", stream.client_id[:8])
        stream.error = f"{type(error).__name__}: {error}"
        stream.finish_translator(image, image, 0)
