"""Out-of-process callback handlers: a user's own callback (timing, logging,
aggregation, ...) runs in its own process, reading the bus, off the server's
hot path, and survives a crash of the server (and its own: see run_handler).

    class Timing(cbus.Handler):
        def on_llm_end(self, event):
            print(event.model, event.usage.get("duration_ns"))

    cbus.run_handler("prod", "timing", Timing())
"""
from __future__ import annotations

import sys
import time
import traceback
from typing import Callable

from . import Consumer, Event

__all__ = ["Handler", "run_handler"]

# event kind -> the LangChain callback name it is delivered to
_METHOD = {
    "llm_start": "on_llm_start", "chat_model_start": "on_chat_model_start",
    "llm_new_token": "on_llm_new_token", "chat_model_stream": "on_llm_new_token",
    "llm_end": "on_llm_end", "llm_error": "on_llm_error",
    "chain_start": "on_chain_start", "chain_end": "on_chain_end",
    "chain_error": "on_chain_error", "tool_start": "on_tool_start",
    "tool_end": "on_tool_end", "tool_error": "on_tool_error", "tool_event": "on_tool_event",
    "agent_action": "on_agent_action", "agent_finish": "on_agent_finish",
    "retriever_start": "on_retriever_start", "retriever_end": "on_retriever_end",
    "retriever_error": "on_retriever_error", "text": "on_text", "retry": "on_retry",
    "custom": "on_custom_event", "score": "on_score",
}


class Handler:
    """Base class: override the callbacks you want.  Each receives the
    cbus.Event (event.run_id, event.parent_run_id, event.text, event.usage,
    ...).  on_event(event) is called first for every event; return False
    from it to skip the specific callback."""

    def on_event(self, event: Event):
        return True

    def on_llm_start(self, event: Event): pass
    def on_chat_model_start(self, event: Event): pass
    def on_llm_new_token(self, event: Event): pass
    def on_llm_end(self, event: Event): pass
    def on_llm_error(self, event: Event): pass
    def on_chain_start(self, event: Event): pass
    def on_chain_end(self, event: Event): pass
    def on_chain_error(self, event: Event): pass
    def on_tool_start(self, event: Event): pass
    def on_tool_end(self, event: Event): pass
    def on_tool_error(self, event: Event): pass
    def on_tool_event(self, event: Event): pass
    def on_agent_action(self, event: Event): pass
    def on_agent_finish(self, event: Event): pass
    def on_retriever_start(self, event: Event): pass
    def on_retriever_end(self, event: Event): pass
    def on_retriever_error(self, event: Event): pass
    def on_text(self, event: Event): pass
    def on_retry(self, event: Event): pass
    def on_custom_event(self, event: Event): pass
    def on_score(self, event: Event): pass

    def on_batch_done(self):
        """Called after each batch, before it is committed: make what the
        batch produced durable here (flush a file); after a crash the bus
        delivers again what was not committed."""


def run_handler(bus: str, name: str, handler: Handler, *, lossless: bool = True,
                start: str = "resume", batch: int = 256, idle_timeout: float | None = None,
                max_events: int | None = None,
                ready: Callable[[Consumer], None] | None = None) -> int:
    """Runs HANDLER on bus BUS as consumer NAME until Ctrl-C/SIGINT,
    idle_timeout seconds without events, or max_events events.  The consumer
    keeps its place (KEEP): a restart with start='resume' (the default)
    continues after the last committed batch, so a handler killed (even
    SIGKILL) and restarted misses nothing (at-least-once: the batch it was
    in is delivered again).  A handler method that raises is reported on
    stderr and the loop goes on.  Returns the number of events handled."""
    if not isinstance(handler, Handler):
        raise TypeError("handler must be a cbus.Handler, not %s" % type(handler).__name__)
    if not isinstance(batch, int) or not 1 <= batch <= 256:
        raise ValueError("batch must be in 1..256")
    if idle_timeout is not None and not (isinstance(idle_timeout, (int, float)) and idle_timeout >= 0):
        raise ValueError("idle_timeout must be >= 0 seconds or None")
    if max_events is not None and not (isinstance(max_events, int) and max_events >= 0):
        raise ValueError("max_events must be >= 0 or None")
    done = 0
    with Consumer(bus, name, lossless=lossless, start=start, keep=True) as c:
        if ready is not None:
            ready(c)
        last = time.monotonic()
        try:
            while max_events is None or done < max_events:
                want = batch if max_events is None else min(batch, max_events - done)
                evs = c.poll(want)
                if not evs:
                    wait = 1.0 if idle_timeout is None else max(0.0, idle_timeout - (time.monotonic() - last))
                    if not c.wait(min(wait, 1.0)) and idle_timeout is not None \
                            and time.monotonic() - last >= idle_timeout:
                        break
                    continue
                last = time.monotonic()
                for ev in evs:
                    try:
                        if handler.on_event(ev) is not False:
                            getattr(handler, _METHOD.get(ev.kind, "on_event"))(ev)
                    except Exception:
                        traceback.print_exc(file=sys.stderr)
                    done += 1
                handler.on_batch_done()
                c.commit()
        except KeyboardInterrupt:
            pass
    return done
