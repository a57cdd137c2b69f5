"""LangChain callback handlers that put every callback on a cbus bus.

    from cbus.langchain import CbusCallbackHandler
    handler = CbusCallbackHandler("prod", user="alice")
    chain.invoke(inputs, config={"callbacks": [handler]})

LangChain's run_id / parent_run_id become the cbus run ids (one trace per
root run), tags and metadata are carried in the start events, and user,
session and model come from the metadata keys in common use (user_id,
session_id, langfuse_user_id, langfuse_session_id, thread_id, ls_model_name,
ls_provider) or the constructor.  The handler never raises into the chain:
a bus that cannot be opened warns once and the handler does nothing.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from . import Producer

__all__ = ["CbusCallbackHandler", "AsyncCbusCallbackHandler"]

_USER_KEYS = ("user_id", "langfuse_user_id", "user")
_SESSION_KEYS = ("session_id", "langfuse_session_id", "thread_id", "conversation_id")
_FINISH = {"stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "length": "length",
           "max_tokens": "length", "tool_calls": "tool_calls", "tool_use": "tool_calls",
           "function_call": "tool_calls", "content_filter": "content_filter"}


# LangChain's message types as the OpenTelemetry GenAI roles of
# gen_ai.input.messages (system, user, assistant, tool); others pass through.
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool",
          "function": "tool", "chat": "user"}


def _documents_json(documents: Any) -> str | None:
    """LangChain Documents as the GenAI retrieval documents shape:
    [{"id", "content", "metadata"}] (exported as gen_ai.retrieval.documents)."""
    out = []
    for d in documents or ():
        item = {"content": _text(getattr(d, "page_content", d))}
        if getattr(d, "id", None) is not None:
            item["id"] = str(d.id)
        md = getattr(d, "metadata", None)
        if md:
            item["metadata"] = md
        out.append(item)
    return json.dumps(out, ensure_ascii=False, default=str) if out else None


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    try:
        return json.dumps(v, default=str, ensure_ascii=False)
    except Exception:
        return str(v)


def _http_status(err: BaseException) -> int | None:
    for obj in (err, getattr(err, "response", None)):
        for attr in ("status_code", "status", "http_status"):
            v = getattr(obj, attr, None)
            if isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 999:
                return v
    return None


def _first(meta: dict, keys) -> str | None:
    for k in keys:
        v = meta.get(k)
        if v is not None and v != "":
            return str(v)
    return None


def _usage(response: Any) -> dict:
    """Usage keywords for Run.llm_end from an LLMResult: usage_metadata of
    the first chat generation's message, else llm_output['token_usage']."""
    kw: dict = {}
    gens = getattr(response, "generations", None) or []
    first = gens[0][0] if gens and gens[0] else None
    msg = getattr(first, "message", None)
    um = getattr(msg, "usage_metadata", None)
    if um:
        if um.get("input_tokens") is not None:
            kw["input_tokens"] = int(um["input_tokens"])
        if um.get("output_tokens") is not None:
            kw["output_tokens"] = int(um["output_tokens"])
        itd = um.get("input_token_details") or {}
        otd = um.get("output_token_details") or {}
        if itd.get("cache_read") is not None:
            kw["cache_read_tokens"] = int(itd["cache_read"])
        if itd.get("cache_creation") is not None:
            kw["cache_creation_tokens"] = int(itd["cache_creation"])
        if otd.get("reasoning") is not None:
            kw["reasoning_tokens"] = int(otd["reasoning"])
    else:
        tu = (getattr(response, "llm_output", None) or {}).get("token_usage") or {}
        if tu.get("prompt_tokens") is not None:
            kw["input_tokens"] = int(tu["prompt_tokens"])
        if tu.get("completion_tokens") is not None:
            kw["output_tokens"] = int(tu["completion_tokens"])
    n = sum(len(g) for g in gens)
    if n:
        kw["generations"] = min(n, 65535)
    info = dict(getattr(first, "generation_info", None) or {})
    info.update(getattr(msg, "response_metadata", None) or {})
    fr = info.get("finish_reason") or info.get("stop_reason")
    if isinstance(fr, str):
        kw["finish_reason"] = _FINISH.get(fr, "other")
    return kw


def _system(ip: dict) -> str | None:
    """System instructions a model took apart from the history, when its
    invocation parameters show them (a `system` field such as Ollama's, or
    `system_instruction` / `instructions`), as OpenTelemetry's
    gen_ai.system_instructions parts.  A SystemMessage in the messages is
    history and stays there."""
    for key in ("system", "system_instruction", "instructions"):
        v = ip.get(key)
        if isinstance(v, str) and v:
            return json.dumps([{"type": "text", "content": v}], ensure_ascii=False)
        if isinstance(v, (list, tuple)) and v:
            parts = []
            for p in v:
                t = p if isinstance(p, str) else (p.get("text") or p.get("content")) if isinstance(p, dict) else None
                if isinstance(t, str):
                    parts.append({"type": "text", "content": t})
            if parts:
                return json.dumps(parts, ensure_ascii=False)
    return None


def _is_id(v: Any) -> bool:
    return (isinstance(v, str) and 0 < len(v) <= 256
            and all(0x20 < ord(c) < 0x7f for c in v))


def _response_id(response: Any) -> str | None:
    """The provider's id of the response: the message's response_metadata
    id, llm_output's id, generation_info's, else the message id when it is
    the provider's (LangChain makes up run-... / lc_run-... ids)."""
    gens = getattr(response, "generations", None) or []
    first = gens[0][0] if gens and gens[0] else None
    msg = getattr(first, "message", None)
    for src in (getattr(msg, "response_metadata", None), getattr(response, "llm_output", None),
                getattr(first, "generation_info", None)):
        v = src.get("id") if isinstance(src, dict) else None
        if _is_id(v):
            return v
    mid = getattr(msg, "id", None)
    if _is_id(mid) and not mid.startswith(("run-", "lc_run-", "lc_")):
        return mid
    return None


class CbusCallbackHandler(BaseCallbackHandler):
    """Emits every LangChain callback as a cbus event (synchronous, inline)."""

    run_inline = True      # async runs call it directly: no thread-pool hop
    raise_error = False

    def __init__(self, bus: str = "prod", *, producer: Producer | None = None,
                 name: str | None = None, provider: str | None = None,
                 model: str | None = None, user: str | None = None,
                 session: str | None = None, agent: str | None = None,
                 tenant: str | None = None) -> None:
        if not isinstance(bus, str):
            raise TypeError("bus must be str, not %s" % type(bus).__name__)
        if producer is not None and not isinstance(producer, Producer):
            raise TypeError("producer must be cbus.Producer or None")
        self._bus = bus
        self._name = name
        self._producer = producer
        self._own = producer is None
        self._pid = os.getpid()
        self._warned = False
        self._lock = threading.Lock()
        self._defaults = {k: v for k, v in (("provider", provider), ("model", model),
                                            ("user", user), ("session", session),
                                            ("agent", agent), ("tenant", tenant)) if v}
        self._runs: dict[UUID, Any] = {}

    # -- plumbing -----------------------------------------------------------

    def _prod(self) -> Producer | None:
        p = self._producer
        if p is not None and not p.closed:
            return p
        if not self._own and p is not None and self._pid == os.getpid():
            return None  # the caller's producer, closed by the caller
        with self._lock:  # first use, or a fork child: open our own
            p = self._producer
            if p is not None and not p.closed:
                return p
            if self._warned and self._pid == os.getpid():
                return None
            try:
                self._producer = Producer(self._bus, self._name)
                self._own = True
                self._pid = os.getpid()
                self._runs = {}
                return self._producer
            except Exception as e:  # a missing bus must not break the chain
                if not self._warned:
                    warnings.warn("cbus: bus %r not available (%s); the LangChain handler "
                                  "does nothing" % (self._bus, e), RuntimeWarning, stacklevel=3)
                self._warned = True
                self._pid = os.getpid()
                return None

    def _start(self, run_id, parent_run_id, tags, metadata, model=None, provider=None):
        p = self._prod()
        if p is None:
            return None
        meta = metadata or {}
        kw = dict(self._defaults)
        u = _first(meta, _USER_KEYS)
        s = _first(meta, _SESSION_KEYS)
        m = model or meta.get("ls_model_name")
        pv = provider or meta.get("ls_provider")
        if u: kw["user"] = u
        if s: kw["session"] = s
        if m: kw["model"] = str(m)
        if pv: kw["provider"] = str(pv)
        parent = self._runs.get(parent_run_id) if parent_run_id else None
        if parent is not None:
            kw["trace_id"] = parent.trace_id  # one trace per root run
        # LangChain hands each run its inherited tags and metadata itself
        run = p.run(run_id=run_id, parent_run_id=parent_run_id,
                    tags=[str(t) for t in tags or ()],
                    metadata={str(k): v for k, v in meta.items()}, **kw)
        self._runs[run_id] = run
        return run

    def _get(self, run_id):
        run = self._runs.get(run_id)
        if run is None and self._prod() is not None:
            run = self._prod().run(run_id=run_id)  # a callback for a run we did not see
            self._runs[run_id] = run
        return run

    def _end(self, run_id):
        return self._runs.pop(run_id, None)

    def _guard(fn):  # noqa: N805  never raise into the chain
        def wrapper(self, *a, **kw):
            try:
                fn(self, *a, **kw)
            except Exception as e:
                if not getattr(self, "_warned_err", False):
                    self._warned_err = True
                    warnings.warn("cbus: handler error ignored: %r" % (e,), RuntimeWarning)
            return None
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    # -- LLM and chat models -----------------------------------------------

    @_guard
    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, tags=None,
                     metadata=None, **kwargs):
        ip = kwargs.get("invocation_params") or {}
        run = self._start(run_id, parent_run_id, tags, metadata,
                          model=ip.get("model_name") or ip.get("model"))
        if run is not None:
            run.llm_start(prompts[-1] if prompts else None, prompt_count=len(prompts),
                          max_tokens=ip.get("max_tokens") if isinstance(ip.get("max_tokens"), int) else None,
                          system=_system(ip))

    @_guard
    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None,
                            tags=None, metadata=None, **kwargs):
        ip = kwargs.get("invocation_params") or {}
        run = self._start(run_id, parent_run_id, tags, metadata,
                          model=ip.get("model_name") or ip.get("model"))
        if run is None:
            return
        flat = [m for batch in messages for m in batch]
        conv = [{"role": _ROLES.get(getattr(m, "type", None), getattr(m, "type", None) or "user"), "parts": [
            {"type": "text", "content": _text(getattr(m, "content", ""))}]} for m in flat]
        last = _text(getattr(flat[-1], "content", None)) if flat else None
        run.chat_model_start(last, messages=json.dumps(conv, ensure_ascii=False, default=str),
                             prompt_count=len(flat), system=_system(ip))

    @_guard
    def on_llm_new_token(self, token, *, chunk=None, run_id, parent_run_id=None, **kwargs):
        run = self._runs.get(run_id)
        if run is not None:
            run.llm_new_token(token if isinstance(token, str) else _text(token))

    @_guard
    def on_llm_end(self, response, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id) or self._get(run_id)
        if run is None:
            return
        gens = getattr(response, "generations", None) or []
        out = gens[0][0].text if gens and gens[0] else None
        run.llm_end(out, response_id=_response_id(response), **_usage(response))

    @_guard
    def on_llm_error(self, error, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id) or self._get(run_id)
        if run is not None:
            run.llm_error(type(error).__name__, str(error), http_status=_http_status(error))

    # -- chains, tools, agents, retrievers ----------------------------------

    @_guard
    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None,
                       metadata=None, **kwargs):
        run = self._start(run_id, parent_run_id, tags, metadata)
        if run is not None:
            name = kwargs.get("name") or (serialized or {}).get("name")
            run.chain_start(name if isinstance(name, str) else None, _text(inputs))

    @_guard
    def on_chain_end(self, outputs, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id)
        if run is not None:
            run.chain_end(_text(outputs))

    @_guard
    def on_chain_error(self, error, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id)
        if run is not None:
            run.chain_error(type(error).__name__, str(error))

    @_guard
    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, tags=None,
                      metadata=None, inputs=None, **kwargs):
        run = self._start(run_id, parent_run_id, tags, metadata)
        if run is not None:
            name = kwargs.get("name") or (serialized or {}).get("name")
            run.tool_start(name if isinstance(name, str) else None, _text(input_str))

    @_guard
    def on_tool_end(self, output, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id)
        if run is not None:
            run.tool_end(_text(getattr(output, "content", output)))

    @_guard
    def on_tool_error(self, error, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id)
        if run is not None:
            run.tool_error(type(error).__name__, str(error))

    @_guard
    def on_agent_action(self, action, *, run_id, parent_run_id=None, **kwargs):
        run = self._get(run_id)
        if run is not None:
            run.agent_action(getattr(action, "tool", None), _text(getattr(action, "tool_input", None)))

    @_guard
    def on_agent_finish(self, finish, *, run_id, parent_run_id=None, **kwargs):
        run = self._get(run_id)
        if run is not None:
            run.agent_finish(_text(getattr(finish, "return_values", None)))

    @_guard
    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, tags=None,
                           metadata=None, **kwargs):
        run = self._start(run_id, parent_run_id, tags, metadata)
        if run is not None:
            name = kwargs.get("name") or (serialized or {}).get("name")
            run.retriever_start(name if isinstance(name, str) else None, _text(query))

    @_guard
    def on_retriever_end(self, documents, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id)
        if run is not None:
            run.retriever_end(document_count=len(documents), documents=_documents_json(documents))

    @_guard
    def on_retriever_error(self, error, *, run_id, parent_run_id=None, **kwargs):
        run = self._end(run_id)
        if run is not None:
            run.retriever_error(type(error).__name__, str(error))

    # -- the rest -------------------------------------------------------------

    @_guard
    def on_text(self, text, *, run_id, parent_run_id=None, **kwargs):
        run = self._get(run_id)
        if run is not None:
            run.text(_text(text))

    @_guard
    def on_retry(self, retry_state, *, run_id, parent_run_id=None, **kwargs):
        run = self._get(run_id)
        if run is None:
            return
        att = getattr(retry_state, "attempt_number", None)
        nxt = getattr(retry_state, "next_action", None)
        sleep = getattr(nxt, "sleep", None)
        out = getattr(retry_state, "outcome", None)
        reason = None
        try:
            if out is not None and out.failed:
                reason = repr(out.exception())
        except Exception:
            pass
        run.retry(attempt=att if isinstance(att, int) and att >= 0 else None,
                  backoff_ns=int(sleep * 1e9) if isinstance(sleep, (int, float)) and sleep >= 0 else None,
                  reason=reason)

    @_guard
    def on_custom_event(self, name, data, *, run_id, tags=None, metadata=None, **kwargs):
        run = self._get(run_id)
        if run is not None:
            run.custom(str(name), _text(data))

    _guard = staticmethod(_guard)


def _async_of(name):
    sync = getattr(CbusCallbackHandler, name)

    async def method(self, *a, **kw):
        sync(self._sync, *a, **kw)  # non-blocking: no executor needed
    method.__name__ = name
    method.__doc__ = sync.__doc__
    return method


class AsyncCbusCallbackHandler(AsyncCallbackHandler):
    """The same events from an AsyncCallbackHandler (emits do not block)."""

    raise_error = False

    def __init__(self, bus: str = "prod", **kwargs: Any) -> None:
        self._sync = CbusCallbackHandler(bus, **kwargs)


for _n in ("on_llm_start", "on_chat_model_start", "on_llm_new_token", "on_llm_end",
           "on_llm_error", "on_chain_start", "on_chain_end", "on_chain_error", "on_tool_start",
           "on_tool_end", "on_tool_error", "on_agent_action", "on_agent_finish",
           "on_retriever_start", "on_retriever_end", "on_retriever_error", "on_text",
           "on_retry", "on_custom_event"):
    setattr(AsyncCbusCallbackHandler, _n, _async_of(_n))
del _n
