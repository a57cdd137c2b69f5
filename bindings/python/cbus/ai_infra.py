"""An ai_infra Callbacks subclass that puts ai_infra's callback events on a
cbus bus.

PyPI's ai-infra (checked: 1.19.0) is the framework with
`from ai_infra import LLM, Callbacks`.  Its Callbacks surface is one event
dataclass per method (on_llm_start(LLMStartEvent), on_llm_token,
on_llm_end, on_llm_error, on_tool_start/end/error, on_mcp_connect/
disconnect/progress/logging, on_graph_node_start/end/error); it has no
on_llm_stream_chunk, on_agent_step or set_global_callbacks, and its events
carry no run ids.  So runs are kept per thread: an LLM call opens a run,
tools and graph nodes inside it are its children, and a graph node that
encloses LLM calls is their parent.

    from ai_infra import LLM
    from cbus.ai_infra import CbusCallbacks
    llm = LLM(callbacks=CbusCallbacks("prod", user="alice"))

ai_infra's package __init__ imports its whole dependency tree; when that is
not installed, the callbacks module (standard library only) is loaded by
itself so the adapter still works against the real class.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
import warnings
from typing import Any

from . import Producer


def _load():
    try:
        return importlib.import_module("ai_infra.callbacks")
    except ImportError:
        spec = importlib.util.find_spec("ai_infra")
        locs = list(spec.submodule_search_locations or []) if spec else []
        path = os.path.join(locs[0], "callbacks.py") if locs else None
        if not path or not os.path.isfile(path):
            raise ImportError("cbus.ai_infra needs the ai-infra package (pip install ai-infra)")
        s = importlib.util.spec_from_file_location("ai_infra_callbacks_standalone", path)
        mod = importlib.util.module_from_spec(s)
        sys.modules[s.name] = mod  # dataclasses look their module up there
        s.loader.exec_module(mod)
        return mod


ai_infra_callbacks = _load()
Callbacks = ai_infra_callbacks.Callbacks

__all__ = ["CbusCallbacks", "Callbacks", "ai_infra_callbacks"]


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    try:
        return json.dumps(v, default=str, ensure_ascii=False)
    except Exception:
        return str(v)


_CTX_KEYS = ("provider", "model", "user", "session", "request_id", "agent", "tenant")


class CbusCallbacks(Callbacks):
    """Forwards every ai_infra callback to cbus (never raises into the call;
    a missing bus warns once and the handler does nothing).  Context from
    each event's `extra` dict: user_id, session_id, request_id, trace_id
    (a UUID or 32 hex digits), agent, tenant."""

    def __init__(self, bus: str = "prod", *, name: str | None = None, **ctx: str) -> None:
        bad = set(ctx) - set(_CTX_KEYS)
        if bad:
            raise TypeError("unexpected keyword argument %r" % sorted(bad)[0])
        self._bus, self._name, self._ctx = bus, name, ctx
        self._p: Producer | None = None
        self._pid = None
        self._warned = False
        self._tls = threading.local()

    def _prod(self):
        if self._p is not None and not self._p.closed:
            return self._p
        if self._warned and self._pid == os.getpid():
            return None
        try:
            self._p = Producer(self._bus, self._name)
        except Exception as e:
            if not self._warned:
                warnings.warn("cbus: bus %r not available (%s); ai_infra callbacks do nothing"
                              % (self._bus, e), RuntimeWarning, stacklevel=3)
            self._warned = True
            self._p = None
        self._pid = os.getpid()
        return self._p

    def _stack(self):
        st = getattr(self._tls, "stack", None)
        if st is None:
            st = self._tls.stack = []
        return st

    def _open(self, event, provider=None, model=None):
        p = self._prod()
        if p is None:
            return None
        extra = getattr(event, "extra", None) or {}
        kw = dict(self._ctx)
        for k, src in (("user", "user_id"), ("session", "session_id"),
                       ("request_id", "request_id"), ("agent", "agent"), ("tenant", "tenant")):
            if extra.get(src):
                kw[k] = str(extra[src])
        if provider:
            kw["provider"] = provider
        if model:
            kw["model"] = model
        st = self._stack()
        if st:
            run = st[-1].child(**kw)
        else:
            tid = extra.get("trace_id")
            try:
                run = p.run(trace_id=tid, **kw) if tid else p.run(**kw)
            except (TypeError, ValueError):
                run = p.run(**kw)
        st.append(run)
        return run

    def _top(self):
        st = self._stack()
        return st[-1] if st else None

    def _close(self):
        st = self._stack()
        return st.pop() if st else None

    def _safe(fn):  # noqa: N805
        def w(self, event):
            try:
                fn(self, event)
            except Exception as e:
                if not getattr(self, "_warned_err", False):
                    self._warned_err = True
                    warnings.warn("cbus: ai_infra callback error ignored: %r" % (e,),
                                  RuntimeWarning)
        w.__name__ = fn.__name__
        return w

    @_safe
    def on_llm_start(self, event):
        run = self._open(event, event.provider, event.model)
        if run is None:
            return
        msgs = event.messages or []
        last = msgs[-1].get("content") if msgs and isinstance(msgs[-1], dict) else None
        run.chat_model_start(_text(last), messages=_text(msgs), prompt_count=len(msgs),
                             max_tokens=event.max_tokens if isinstance(event.max_tokens, int)
                             and event.max_tokens >= 0 else None)

    @_safe
    def on_llm_token(self, event):
        run = self._top()
        if run is not None:
            run.llm_new_token(event.token if isinstance(event.token, str) else _text(event.token))

    @_safe
    def on_llm_end(self, event):
        run = self._close()
        if run is None:
            return
        kw = {}
        if isinstance(event.input_tokens, int) and event.input_tokens >= 0:
            kw["input_tokens"] = event.input_tokens
        if isinstance(event.output_tokens, int) and event.output_tokens >= 0:
            kw["output_tokens"] = event.output_tokens
        if event.latency_ms:
            kw["duration_ns"] = int(event.latency_ms * 1e6)
        if isinstance(event.finish_reason, str):
            fr = event.finish_reason
            kw["finish_reason"] = fr if fr in ("stop", "length", "tool_calls",
                                               "content_filter") else "other"
        run.llm_end(_text(event.response), **kw)

    @_safe
    def on_llm_error(self, event):
        run = self._close()
        if run is None:
            return
        err = event.error
        status = getattr(err, "status_code", None) or getattr(getattr(err, "response", None),
                                                              "status_code", None)
        run.llm_error(event.error_type, str(err), http_status=status
                      if isinstance(status, int) and 100 <= status <= 999 else None)

    @_safe
    def on_tool_start(self, event):
        run = self._open(event)
        if run is not None:
            run.tool_start(event.tool_name, _text(event.arguments))

    @_safe
    def on_tool_end(self, event):
        run = self._close()
        if run is not None:
            run.tool_end(_text(event.result))

    @_safe
    def on_tool_error(self, event):
        run = self._close()
        if run is not None:
            run.tool_error(event.error_type, str(event.error))

    @_safe
    def on_graph_node_start(self, event):
        run = self._open(event)
        if run is not None:
            run.chain_start(event.node_id, _text(event.inputs))

    @_safe
    def on_graph_node_end(self, event):
        run = self._close()
        if run is not None:
            run.chain_end(_text(event.outputs))

    @_safe
    def on_graph_node_error(self, event):
        run = self._close()
        if run is not None:
            run.chain_error(type(event.error).__name__, str(event.error))

    def _custom(self, name, data):
        run = self._top()
        if run is None:
            p = self._prod()
            run = p.run(**self._ctx) if p is not None else None
        if run is not None:
            run.custom(name, _text(data))

    @_safe
    def on_mcp_connect(self, event):
        self._custom("mcp_connect", {"server": event.server_name, "transport": event.transport,
                                     "tools": event.tools_count})

    @_safe
    def on_mcp_disconnect(self, event):
        self._custom("mcp_disconnect", {"server": event.server_name, "reason": event.reason})

    @_safe
    def on_mcp_progress(self, event):
        self._custom("mcp_progress", {"server": event.server_name, "tool": event.tool_name,
                                      "progress": event.progress, "total": event.total,
                                      "message": event.message})

    @_safe
    def on_mcp_logging(self, event):
        self._custom("mcp_logging", {"server": event.server_name, "tool": event.tool_name,
                                     "level": event.level, "data": event.data})

    _safe = staticmethod(_safe)
