"""The output's right of way (`vcam.output_gate`): background model work waits while a frame is due, until it is sent.

Checked on a manual clock, never on wall-clock thresholds: what waits, from when, until what.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.fakes.clock import ManualClock
from tests.test_runtime import RecordingSink
from tests.waiting import wait_for
from vcam.output_gate import MARGIN_S, OutputGate, giving_way
from vcam.runtime import Runtime
from vcam.sources.demo import DemoSource
from vcam.translators.base import Translator

W, H, FPS = 64, 48, 30.0
#: a longest wait no test reaches: a test ends each wait itself
NEVER_S = 30.0


def _in_thread(work: object) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_background_work_passes_while_no_frame_is_near() -> None:
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=NEVER_S)
    gate.give_way()  # the output has not started: nothing is due
    gate.expect(clock.now() + MARGIN_S + 0.001)
    gate.give_way()
    gate.open()
    clock.advance(1.0)
    gate.give_way()
    assert gate.waits == 0


def test_background_work_waits_from_the_margin_until_the_frame_is_sent() -> None:
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=NEVER_S)
    due = clock.now() + 1 / FPS
    gate.expect(due)
    clock.advance_to(due - MARGIN_S)
    passed = threading.Event()
    waiter = _in_thread(lambda: (gate.give_way(), passed.set()))
    wait_for(lambda: gate.waits == 1, what="the background work to wait")
    clock.advance_to(due)  # the frame is due: still waiting until the output says it was sent
    assert not passed.wait(0.05)
    gate.expect(due + 1 / FPS)
    waiter.join(5)
    assert passed.is_set()


def test_a_stalled_output_holds_background_work_once_for_the_longest_wait() -> None:
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=0.01)
    gate.expect(clock.now())
    gate.give_way()  # waits 10 ms (real time): the output never sends
    gate.give_way()  # the same frame: no second wait
    assert gate.waits == 1
    gate.expect(clock.now() + 1 / FPS)
    clock.advance(1 / FPS)
    gate.give_way()  # a new frame is due and again not sent: one more wait
    assert gate.waits == 2


def test_the_output_opening_the_gate_releases_background_work() -> None:
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=NEVER_S)
    gate.expect(clock.now())
    waiter = _in_thread(gate.give_way)
    wait_for(lambda: gate.waits == 1, what="the background work to wait")
    gate.open()  # the output stopped
    waiter.join(5)
    assert not waiter.is_alive()


def test_the_output_never_waits_for_the_gates_lock() -> None:
    """A waiting thread (at a lower priority, possibly off the CPU) may hold the gate's lock: the output's `expect`
    does not wait for it, and the waiter still sees the frame sent."""
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=NEVER_S)
    gate.expect(clock.now())
    waiter = _in_thread(gate.give_way)
    wait_for(lambda: gate.waits == 1, what="the background work to wait")
    with gate._changed:  # the lock held, as by a waiter the scheduler preempted
        announcing = _in_thread(lambda: gate.expect(clock.now() + 1 / FPS))
        announcing.join(5)
        assert not announcing.is_alive()
    waiter.join(5)
    assert not waiter.is_alive()


def test_only_the_giving_threads_torch_calls_wait() -> None:
    """A torch call waits in a thread under `giving_way`; the same call in another thread (the frame loop's) does
    not: torch's function modes are per thread."""
    torch = pytest.importorskip("torch")
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=NEVER_S)
    gate.expect(clock.now())
    done: list[float] = []

    def background() -> None:
        with giving_way(gate):
            done.append(float(torch.ones(2).sum()))

    waiter = _in_thread(background)
    wait_for(lambda: gate.waits == 1, what="the background torch call to wait")
    assert float(torch.ones(3).sum()) == 3.0  # this thread is not held
    assert done == []
    gate.expect(clock.now() + 1 / FPS)
    waiter.join(5)
    assert done == [2.0]
    assert gate.waits == 1


def test_a_loads_torch_calls_wait_until_the_due_frame_is_sent() -> None:
    """In the runtime: a style load that calls torch while a frame is due within the margin waits until the output
    thread has sent that frame, so the GIL is not the load's when the output needs it; the loaded translator is
    told to give way to the same output."""
    torch = pytest.importorskip("torch")
    clock = ManualClock()
    sink = RecordingSink(clock)
    calling = threading.Event()
    frames_sent_when_done: list[int] = []

    gates: list[OutputGate] = []

    class Plain(Translator):
        name = "plain"

        def __call__(self, image: np.ndarray) -> np.ndarray:
            return image

        def give_way_to(self, gate: OutputGate) -> None:
            gates.append(gate)

    def load(name: str) -> Translator:
        calling.set()
        torch.zeros(4).add_(1)
        frames_sent_when_done.append(len(sink.frames))
        return Plain()

    runtime = Runtime(DemoSource(W, H, FPS), [sink], width=W, height=H, fps=FPS, translator_loader=load, clock=clock)
    runtime.start()
    try:
        wait_for(lambda: len(sink.frames) == 1, what="the first frame")
        due = clock.wait_for_waiters(1)  # the output thread waits for frame 1
        clock.advance_to(due - MARGIN_S / 2)
        runtime.set_style("plain")
        wait_for(calling.is_set, what="the load to call torch")
        wait_for(lambda: runtime._gate.waits == 1, what="the load's torch call to wait")
        assert frames_sent_when_done == []
        clock.advance_to(due)
        wait_for(lambda: frames_sent_when_done, what="the load's torch call to return")
        assert frames_sent_when_done == [2]  # it returned after frame 1 (the second) was sent
        wait_for(lambda: runtime.status().style == "plain", what="the style to go live")
        assert gates == [runtime._gate]  # and its later background work gives way too
    finally:
        runtime.stop()


def test_a_new_prompts_background_warmup_gives_way_once_the_style_is_live() -> None:
    """A diffusion look the runtime made give way (`give_way_to`): its new prompt's warmup thread waits while a frame
    is due, and the prompt switches once the output has sent it."""
    pytest.importorskip("torch")
    from vcam.model.tiny import build_tiny_pipeline

    from tests.pipeline_helpers import moving_frames
    from vcam.translators.live2diff import Live2DiffTranslator

    translator = Live2DiffTranslator(build_tiny_pipeline(prompt="old prompt"))
    frames = moving_frames(translator.pipeline.warmup_frames + 1)
    for frame in frames:
        translator.pipeline.step(frame)
    clock = ManualClock()
    gate = OutputGate(clock, longest_wait_s=NEVER_S)
    translator.give_way_to(gate)
    gate.expect(clock.now())  # a frame is due
    translator.set_prompt("new prompt")
    wait_for(lambda: gate.waits == 1, what="the prompt's warmup to wait")
    assert not translator.pipeline.wait_prompt_switch(timeout=0.05)
    gate.expect(clock.now() + 1 / FPS)  # sent: the warmup goes on
    assert translator.pipeline.wait_prompt_switch(timeout=60)
    translator.pipeline.step(frames[-1])
    assert translator.prompt == "new prompt"
