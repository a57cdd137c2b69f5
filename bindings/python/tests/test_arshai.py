"""cbus.arshai against Arshai's real callback classes (PyPI arshai 0.6.3,
installed without its deps: the two callback modules need only requests and
aiohttp) and the real cbus-history daemon for the chat history."""
import asyncio
import importlib.util
import json
import os
import time
import uuid
import warnings

import pytest

STRICT = os.environ.get("CBUS_TEST_STRICT") == "1"
if importlib.util.find_spec("arshai") is None or importlib.util.find_spec("aiohttp") is None:
    if STRICT:
        raise RuntimeError("arshai 0.6.3 or aiohttp not installed (bindings/python/test.sh, "
                           "tests/requirements.txt)")
    pytest.skip("arshai not installed", allow_module_level=True)

import cbus
from cbus.arshai import (AccountingCallbackHandler, CbusAccountingCallbackHandler,
                         CbusChatHistoryCallbackHandler, ChatHistoryCallbackHandler)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def drain(c):
    out = []
    while True:
        got = c.poll(256)
        out.extend(got)
        if not got and not c.wait(0.3):
            return out


def test_accounting_record_is_an_llm_end_with_agent_and_user(bus):
    assert issubclass(CbusAccountingCallbackHandler, AccountingCallbackHandler)
    assert CbusAccountingCallbackHandler.call_accounting is not AccountingCallbackHandler.call_accounting
    corr = uuid.uuid4()
    h = CbusAccountingCallbackHandler(correlation_id=str(corr), request_id="req-7",
                                      user_id="u-42", bus=bus, tenant="acme")
    h.model_name = "gpt-4o-mini"
    with cbus.Consumer(bus, "t", start="oldest") as c:
        asyncio.run(h.call_accounting(20, 100, "support-agent"))
        asyncio.run(h.call_accounting("7", "30", "support-agent"))  # counts as strings
        evs = drain(c)
    assert [e.kind for e in evs] == ["llm_end", "llm_end"]
    e = evs[0]
    assert (e.user, e.agent, e.request_id, e.model, e.tenant) == ("u-42", "support-agent",
                                                                  "req-7", "gpt-4o-mini", "acme")
    assert e.usage == {"input_tokens": 100, "output_tokens": 20}
    assert e.trace_id == corr
    assert evs[1].usage == {"input_tokens": 30, "output_tokens": 7}


async def until(fn, timeout=15.0):
    end = time.time() + timeout
    while True:
        v = await fn()
        if v or time.time() > end:
            return v
        await asyncio.sleep(0.05)


def test_chat_history_reaches_cbus_history_and_reads_back(bus, history):
    url, _ = history
    assert issubclass(CbusChatHistoryCallbackHandler, ChatHistoryCallbackHandler)
    user = {"user_id": "u-42", "org_id": "acme", "details": {"given_name": "Ann"}}
    h = CbusChatHistoryCallbackHandler(conversation_id="arshai-conv-1", correlation_id="c-1",
                                       request_id="r-1", user_data=user, agent_title="Support",
                                       bus=bus, history_url=url)

    async def go():
        conv = await h.create_conversation()
        assert conv == "arshai-conv-1"
        q = await h.send_message(conv, "My order #123 has not arrived.", "end_user", None,
                                 "2026-12-03T12:00:00Z")
        a = await h.send_message(conv, "Sorry! Let me check order #123.", "agent", q,
                                 "2026-12-03T12:00:02Z", metadata={"intent": "order_status",
                                                                   "confidence": 0.9})
        # a branch: the agent's second try answers the same question
        b = await h.send_message(conv, "It ships tomorrow.", "agent", q, "2026-12-03T12:00:05Z",
                                 metadata=[{"tool": "orders"}],
                                 conversation_state="human-intervention")
        r = await h.rename_conversation(conv, "Order #123 missing")
        assert r["success"]
        assert await until(lambda: h.check_conversation_id(conv))

        async def renamed():
            d = await h.get_conversation_details(conv)
            return d if d.get("title") == "Order #123 missing" and d.get("messages") == 3 else None
        d = await until(renamed)
        assert d, await h.get_conversation_details(conv)
        assert (d["user"], d["tenant"], d["agent"], d["state"]) == ("u-42", "acme", "Support",
                                                                   "human-intervention")
        assert await h.get_conversation_state(conv) == "human-intervention"
        latest = await h.get_latest_message(conv, 2)
        assert [m["id"] for m in latest] == [b, a]
        assert latest[0]["parent"] == q and latest[1]["parent"] == q
        assert latest[1]["role"] == "assistant"
        assert latest[1]["metadata"]["intent"] == "order_status"
        assert latest[1]["metadata"]["confidence"] == "0.9"
        assert latest[1]["metadata"]["sender"] == "agent"
        assert json.loads(latest[0]["metadata"]["metadata"]) == [{"tool": "orders"}]
        first = (await h.get_latest_message(conv, 3))[-1]
        assert (first["id"], first["role"], first["parent"]) == (q, "user", None)
        assert first["text"] == "My order #123 has not arrived."
        assert not await h.check_conversation_id("no-such-conversation")
        missing = await h.get_conversation_details("no-such-conversation")
        assert missing["success"] is False
    asyncio.run(go())


def test_handlers_never_raise_without_a_bus():
    h = CbusChatHistoryCallbackHandler(conversation_id="x", user_data={}, bus="no-such-bus-here")
    a = CbusAccountingCallbackHandler(user_id="u", bus="no-such-bus-here")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert asyncio.run(h.create_conversation()) == "x"
        mid = asyncio.run(h.send_message("x", "hi", "end_user", None, None))
        asyncio.run(a.call_accounting(1, 2, "agent"))
    uuid.UUID(mid)
    assert any("not available" in str(x.message) for x in w)
