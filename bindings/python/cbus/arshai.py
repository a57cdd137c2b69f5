"""Arshai's callback handlers on a cbus bus: accounting records as llm_end
events (tokens per request, user and agent, for cbus-cost), and the chat
history as explicit conversation events (for cbus-history).

Arshai's handlers are `arshai.callbacks.accounting.AccountingCallbackHandler`
(`call_accounting(output_tokens, prompt_tokens, agent_slug)`, posting a usage
record to Arshai's accounting service) and
`arshai.callbacks.chat_history.ChatHistoryCallbackHandler` (create_conversation,
send_message with sender, parent message id and metadata, rename_conversation,
get_conversation_details / state, get_latest_message, check_conversation_id,
against its chat-history service).  PyPI's arshai has them up to 0.6.3 (checked;
1.x dropped the callbacks package).  The classes here subclass the real ones:
an Arshai server swaps its handler class and its records go on the bus
instead of into two HTTP services, out of the request's path.

    from cbus.arshai import CbusAccountingCallbackHandler, CbusChatHistoryCallbackHandler
    acc = CbusAccountingCallbackHandler(correlation_id=cid, request_id=rid, user_id=uid,
                                        bus="prod")
    await acc.call_accounting(output_tokens, prompt_tokens, "support-agent")
    hist = CbusChatHistoryCallbackHandler(conversation_id=conv, user_data=user,
                                          agent_title="Support", bus="prod",
                                          history_url="http://127.0.0.1:9470")
    conv = await hist.create_conversation()
    mid = await hist.send_message(conv, "Hello", "end_user", None, now)

Writes never raise into the caller (a missing bus warns once and does
nothing, as every cbus handler).  Reads (get_conversation_details, ...) go to
cbus-history's HTTP API when history_url is given, else to Arshai's own
client, as the base class does.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any, Dict, Optional
from uuid import uuid4

from . import Producer

try:
    from arshai.callbacks.accounting import AccountingCallbackHandler
    from arshai.callbacks.chat_history import ChatHistoryCallbackHandler
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("cbus.arshai needs Arshai's callbacks (pip install 'arshai<1'; "
                      "1.x has no arshai.callbacks): %s" % e) from e

__all__ = ["CbusAccountingCallbackHandler", "CbusChatHistoryCallbackHandler",
           "AccountingCallbackHandler", "ChatHistoryCallbackHandler"]


class _Bus:
    """One producer per process and bus, opened on first use (a forked
    worker opens its own)."""

    def __init__(self, bus: str, name: Optional[str]) -> None:
        self.bus, self.name = bus, name
        self._p: Optional[Producer] = None
        self._pid = 0
        self._warned = False
        self._lock = threading.Lock()

    def producer(self) -> Optional[Producer]:
        with self._lock:
            if self._p is not None and self._pid == os.getpid() and not self._p.closed:
                return self._p
            try:
                self._p = Producer(self.bus, name=self.name)
                self._pid = os.getpid()
                return self._p
            except OSError as e:
                if not self._warned:
                    warnings.warn("cbus: bus %r not available (%s): the Arshai handler does "
                                  "nothing" % (self.bus, e), RuntimeWarning, stacklevel=3)
                    self._warned = True
                return None

    def run(self, **kw: Any):
        p = self.producer()
        if p is None:
            return None
        return p.run(**{k: str(v) for k, v in kw.items() if v not in (None, "")})


def _warn_once(obj: Any, e: Exception) -> None:
    if not getattr(obj, "_cbus_warned_err", False):
        obj._cbus_warned_err = True
        warnings.warn("cbus: Arshai handler error ignored: %r" % (e,), RuntimeWarning)


class CbusAccountingCallbackHandler(AccountingCallbackHandler):
    """Arshai's accounting record as an llm_end with usage: input tokens =
    prompt_tokens, output tokens = output_tokens, agent = agent_slug, user =
    user_id, request id = request_id, model = model_name (set it as Arshai
    does); correlation_id becomes the trace id when it is a UUID.  cbus-cost
    counts it per user, agent, model and tenant."""

    def __init__(self, correlation_id=None, request_id=None, user_id=None, *, bus: str = "prod",
                 provider: Optional[str] = None, session: Optional[str] = None,
                 tenant: Optional[str] = None, producer_name: Optional[str] = None) -> None:
        super().__init__(correlation_id=correlation_id, request_id=request_id, user_id=user_id)
        self._cbus = _Bus(bus, producer_name)
        self._cbus_ctx = {"provider": provider, "session": session, "tenant": tenant}

    async def call_accounting(self, output_tokens, prompt_tokens, agent_slug):
        try:
            kw = dict(self._cbus_ctx, user=self._user_id, request_id=self._request_id,
                      agent=agent_slug, model=self.model_name)
            try:
                kw["trace_id"] = str(uuid_of(self._correlation_id))
            except ValueError:
                pass
            run = self._cbus.run(**kw)
            if run is not None:
                run.llm_end(None, input_tokens=_count(prompt_tokens),
                            output_tokens=_count(output_tokens))
        except Exception as e:  # never into the request
            _warn_once(self, e)


def uuid_of(v: Any):
    import uuid
    if v is None:
        raise ValueError("none")
    return uuid.UUID(str(v))


def _count(v: Any) -> Optional[int]:
    """A token count as Arshai passes it (int or a numeric string); None
    (absent, not zero) when it is neither."""
    try:
        n = int(v)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


_ROLES = {"end_user": "user", "user": "user", "human": "user", "system": "system",
          "tool": "tool", "function": "tool"}


def _state(s: Any) -> Optional[str]:
    """Arshai's states (normal, finish, archive, human-intervention, ...)
    as cbus-history's ([a-z0-9_-], 32 bytes at most)."""
    if not isinstance(s, str):
        return None
    t = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "-" for c in s.lower())[:32]
    return t or None


class CbusChatHistoryCallbackHandler(ChatHistoryCallbackHandler):
    """Arshai's chat history as conversation events: create_conversation,
    send_message (sender "end_user" is the user; any other responder the
    assistant; parent message id, metadata, and a conversation state other
    than the last one sent become a state event), rename_conversation.
    The user is user_data["user_id"], the tenant user_data["org_id"], the
    agent agent_title.  Reads come from cbus-history's API at history_url
    (http://127.0.0.1:9470), else from the base class's own client."""

    def __init__(self, message_time=None, conversation_id=None, correlation_id=None,
                 request_id=None, parent_message=None, user_data=None, realm=None,
                 agent_title=None, is_anonymous=True, *, bus: str = "prod",
                 history_url: Optional[str] = None, producer_name: Optional[str] = None,
                 timeout: float = 5.0, history_token: Optional[str] = None) -> None:
        super().__init__(message_time=message_time, conversation_id=conversation_id,
                         correlation_id=correlation_id, request_id=request_id,
                         parent_message=parent_message, user_data=user_data or {}, realm=realm,
                         agent_title=agent_title, is_anonymous=is_anonymous)
        self._cbus = _Bus(bus, producer_name)
        self._history_url = history_url.rstrip("/") if history_url else None
        self._timeout = timeout
        # the API's bearer token (the daemon's CBUS_HISTORY_TOKEN), if it has one
        self._token = history_token or os.environ.get("CBUS_HISTORY_TOKEN") or None
        self._states: Dict[str, str] = {}

    # -- writes: events on the bus ------------------------------------------

    def _run(self):
        ud = self._user_data or {}
        return self._cbus.run(user=ud.get("user_id"), tenant=ud.get("org_id"),
                              agent=self._agent_title, request_id=self._request_id,
                              model=self.model_name)

    def _set_state(self, run, conversation_id: str, state: Any) -> None:
        st = _state(state)
        if st and self._states.get(conversation_id, "normal") != st:
            if run.conversation_set_state(conversation_id, st):
                self._states[conversation_id] = st

    async def create_conversation(self, conversation_state="normal"):
        conv = self._conversation_id or str(uuid4())
        try:
            run = self._run()
            if run is not None:
                run.conversation_create(conv, None)
                self._states.setdefault(conv, "normal")
                self._set_state(run, conv, conversation_state)
        except Exception as e:
            _warn_once(self, e)
        return conv

    async def send_message(self, conversation_id, message_text, sender, parent_message_id,
                           message_time, metadata=[], conversation_state="normal") -> str:
        message_id = str(uuid4())
        try:
            run = self._run()
            if run is None:
                return message_id
            meta = {"sender": str(sender)}
            if message_time is not None:
                meta["message_time"] = str(message_time)
            if self._correlation_id:
                meta["correlation_id"] = str(self._correlation_id)
            if isinstance(metadata, dict):
                meta.update({str(k): v if isinstance(v, str) else json.dumps(v, default=str)
                             for k, v in metadata.items()})
            elif metadata:
                meta["metadata"] = json.dumps(metadata, default=str, ensure_ascii=False)
            text = message_text if isinstance(message_text, str) else (
                None if message_text is None else str(message_text))
            run.conversation_message(_ROLES.get(str(sender), "assistant"), text, id=message_id,
                                     parent_id=parent_message_id or None, metadata=meta,
                                     conversation_id=str(conversation_id))
            self._set_state(run, str(conversation_id), conversation_state)
        except Exception as e:
            _warn_once(self, e)
        return message_id

    async def rename_conversation(self, conversation_id: str, new_name: str) -> Dict:
        try:
            run = self._run()
            ok = bool(run is not None and run.conversation_rename(conversation_id, new_name))
            return {"success": ok, "conversation_id": conversation_id, "title": new_name}
        except Exception as e:
            return {"success": False, "error": str(e)}

    # -- reads: cbus-history's API ------------------------------------------

    def _get(self, path: str):
        """(status, JSON) of GET history_url + path."""
        req = urllib.request.Request(self._history_url + path, method="GET")
        if self._token:
            req.add_header("Authorization", "Bearer " + self._token)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as r:
                return r.status, json.loads(r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read().decode("utf-8"))
            except ValueError:
                return e.code, {"error": str(e)}

    async def _aget(self, path: str):
        return await asyncio.get_running_loop().run_in_executor(None, self._get, path)

    @staticmethod
    def _q(conversation_id: str) -> str:
        return urllib.parse.quote(str(conversation_id), safe="")

    async def get_conversation_details(self, conversation_id: str) -> Dict:
        if not self._history_url:
            return await super().get_conversation_details(conversation_id)
        try:
            status, doc = await self._aget("/v1/conversations/" + self._q(conversation_id))
            if status != 200:
                return {"success": False, "error": doc.get("error", "HTTP %d" % status)}
            doc.pop("thread", None)
            return doc
        except Exception as e:
            return {"success": False, "error": str(e)}

    async def get_conversation_state(self, conversation_id: str) -> str:
        if not self._history_url:
            return await super().get_conversation_state(conversation_id)
        doc = await self.get_conversation_details(conversation_id)
        return doc.get("state") if doc.get("success", True) else None

    async def get_latest_message(self, conversation_id: str, num_messages: int = 1) -> Dict:
        if not self._history_url:
            return await super().get_latest_message(conversation_id, num_messages)
        try:
            status, doc = await self._aget("/v1/conversations/%s/messages"
                                           % self._q(conversation_id))
            if status != 200:
                return None
            return list(reversed(doc.get("messages", [])))[0:num_messages]  # latest first
        except Exception:
            return None

    async def check_conversation_id(self, conversation_id: str) -> bool:
        if not self._history_url:
            return await super().check_conversation_id(conversation_id)
        try:
            status, _ = await self._aget("/v1/conversations/" + self._q(conversation_id))
            return status == 200
        except Exception:
            return False
