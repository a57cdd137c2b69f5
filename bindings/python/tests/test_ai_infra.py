"""cbus.ai_infra against the real ai_infra Callbacks class and its own
CallbackManager (ai-infra 1.19.0 from PyPI, installed without its deps)."""
import importlib.util
import os

import pytest

if importlib.util.find_spec("ai_infra") is None:  # its __init__ needs its deps: not imported
    if os.environ.get("CBUS_TEST_STRICT") == "1":
        raise RuntimeError("ai-infra not installed (bindings/python/test.sh installs it)")
    pytest.skip("ai-infra not installed", allow_module_level=True)

import cbus
from cbus.ai_infra import CbusCallbacks, ai_infra_callbacks as ac


def drain(c):
    out = []
    while True:
        got = c.poll(256)
        out.extend(got)
        if not got and not c.wait(0.3):
            return out


class HTTPError(Exception):
    status_code = 503


def test_every_callback_is_forwarded_with_its_context(bus):
    names = [n for n in dir(ac.Callbacks) if n.startswith("on_") and not n.endswith("_async")]
    assert [n for n in names if getattr(CbusCallbacks, n) is getattr(ac.Callbacks, n)] == []
    cb = CbusCallbacks(bus, tenant="acme")
    mgr = ac.CallbackManager([cb])
    with cbus.Consumer(bus, "t", start="oldest") as c:
        mgr.on_graph_node_start(ac.GraphNodeStartEvent("plan", "agent", {"q": 1}))
        mgr.on_llm_start(ac.LLMStartEvent("openai", "gpt-4o",
                                          [{"role": "user", "content": "hi"}], max_tokens=50,
                                          extra={"user_id": "alice", "session_id": "s1",
                                                 "request_id": "r1"}))
        for i, t in enumerate(["He", "llo"]):
            mgr.on_llm_token(ac.LLMTokenEvent("openai", "gpt-4o", t, i))
        mgr.on_tool_start(ac.ToolStartEvent("search", {"q": "cats"}))
        mgr.on_tool_end(ac.ToolEndEvent("search", ["a", "b"], latency_ms=3))
        mgr.on_tool_start(ac.ToolStartEvent("bad", {}))
        mgr.on_tool_error(ac.ToolErrorEvent("bad", ValueError("x"), {}))
        mgr.on_llm_end(ac.LLMEndEvent("openai", "gpt-4o", "Hello", input_tokens=9,
                                      output_tokens=2, latency_ms=12.5, finish_reason="stop"))
        mgr.on_llm_start(ac.LLMStartEvent("openai", "gpt-4o", []))
        mgr.on_llm_error(ac.LLMErrorEvent("openai", "gpt-4o", HTTPError("busy")))
        mgr.on_mcp_progress(ac.MCPProgressEvent("fs", "read", 0.5))
        mgr.on_mcp_connect(ac.MCPConnectEvent("fs", "stdio", 3))
        mgr.on_mcp_logging(ac.MCPLoggingEvent("fs", None, "info", "hello"))
        mgr.on_mcp_disconnect(ac.MCPDisconnectEvent("fs"))
        mgr.on_graph_node_end(ac.GraphNodeEndEvent("plan", "agent", {"ok": True}))
        mgr.on_graph_node_start(ac.GraphNodeStartEvent("n2", "x", {}))
        mgr.on_graph_node_error(ac.GraphNodeErrorEvent("n2", "x", KeyError("k")))
        evs = drain(c)
    kinds = [e.kind for e in evs]
    assert kinds == ["chain_start", "chat_model_start", "llm_new_token", "llm_new_token",
                     "tool_start", "tool_end", "tool_start", "tool_error", "llm_end",
                     "chat_model_start", "llm_error", "custom", "custom", "custom", "custom",
                     "chain_end", "chain_start", "chain_error"]
    node, llm = evs[0], evs[1]
    assert llm.parent_run_id == node.run_id and llm.trace_id == node.trace_id
    assert (llm.provider, llm.model, llm.user, llm.session, llm.request_id, llm.tenant) == (
        "openai", "gpt-4o", "alice", "s1", "r1", "acme")
    assert evs[4].parent_run_id == llm.run_id and evs[4].name == "search"
    assert evs[5].text == '["a", "b"]' and evs[7].name == "ValueError"
    u = evs[8].usage
    assert (u["input_tokens"], u["output_tokens"], u["duration_ns"], u["finish_reason"]) == (
        9, 2, 12_500_000, "stop")
    assert evs[8].run_id == llm.run_id and "reasoning_tokens" not in u
    assert evs[10].http_status == 503 and evs[10].name == "HTTPError"
    assert [e.name for e in evs[11:15]] == ["mcp_progress", "mcp_connect", "mcp_logging",
                                           "mcp_disconnect"]
    assert evs[15].run_id == node.run_id and evs[17].name == "KeyError"


def test_a_missing_bus_warns_once_and_never_raises():
    cb = CbusCallbacks("nosuchbus.ai")
    mgr = ac.CallbackManager([cb], )
    with pytest.warns(RuntimeWarning, match="nosuchbus.ai"):
        mgr.on_llm_start(ac.LLMStartEvent("p", "m", []))
    mgr.on_llm_end(ac.LLMEndEvent("p", "m", "x"))
    with pytest.raises(TypeError, match="colour"):
        CbusCallbacks("x", colour="red")
