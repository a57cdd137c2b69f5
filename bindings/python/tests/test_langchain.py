import json
import asyncio
import threading
import time
import warnings

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManager
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import (FakeListChatModel,
                                                              GenericFakeChatModel)
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

import cbus
from cbus.langchain import AsyncCbusCallbackHandler, CbusCallbackHandler


def drain(c, quiet=0.3):
    out = []
    while True:
        got = c.poll(256)
        out.extend(got)
        if not got and not c.wait(quiet):
            return out


def usage_msg(text, i, o, cache=None, reasoning=None):
    um = {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}
    if cache is not None:
        um["input_token_details"] = {"cache_read": cache}
    if reasoning is not None:
        um["output_token_details"] = {"reasoning": reasoning}
    return AIMessage(content=text, usage_metadata=um)


def test_sequence_carries_the_run_tree_usage_tags_and_metadata(bus):
    h = CbusCallbackHandler(bus, provider="fake")
    model = GenericFakeChatModel(messages=iter([usage_msg("hello there", 11, 2, 4, 1)]))
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    with cbus.Consumer(bus, "t", start="oldest") as c:
        out = chain.invoke({"q": "hi"}, config={
            "callbacks": [h], "tags": ["web"],
            "metadata": {"user_id": "alice", "langfuse_session_id": "s9",
                         "ls_model_name": "fake-1"}})
        evs = drain(c)
    assert out == "hello there"
    kinds = [e.kind for e in evs]
    assert kinds == ["chain_start", "chain_start", "chain_end", "chat_model_start", "llm_end",
                     "chain_start", "chain_end", "chain_end"]
    root = evs[0]
    assert root.parent_run_id is None and "web" in root.tags and root.provider == "fake"
    assert root.metadata["user_id"] == "alice"
    for e in evs:
        assert e.trace_id == root.trace_id and e.user == "alice" and e.session == "s9"
    llm = evs[3]
    assert llm.parent_run_id == root.run_id and llm.model == "fake-1" and llm.provider == "genericfakechatmodel"  # ls_provider wins over the default
    assert '"hi"' in llm.messages
    # OpenTelemetry's roles, not LangChain's message types (human, ai)
    assert [m["role"] for m in json.loads(llm.messages)] == ["user"]
    u = evs[4].usage
    assert (u["input_tokens"], u["output_tokens"], u["cache_read_tokens"],
            u["reasoning_tokens"]) == (11, 2, 4, 1)
    assert "cache_creation_tokens" not in u
    assert evs[4].run_id == llm.run_id and evs[4].text == "hello there"


def test_streaming_tokens_arrive_in_order_and_join_to_the_output(bus):
    h = CbusCallbackHandler(bus)
    model = GenericFakeChatModel(messages=iter(["one two three four"]))
    with cbus.Consumer(bus, "t", start="oldest") as c:
        chunks = [ch.content for ch in model.stream("go", config={"callbacks": [h]})]
        evs = drain(c)
    toks = [e for e in evs if e.kind == "llm_new_token"]
    assert "".join(e.preview for e in toks) == "".join(chunks) == "one two three four"
    assert [e.token_index for e in toks] == list(range(len(toks)))
    assert evs[-1].kind == "llm_end" and "ttft_ns" in evs[-1].usage


@tool
def lookup(city: str) -> str:
    """Weather of a city."""
    return "sunny in " + city


@tool
def broken(x: str) -> str:
    """Always fails."""
    raise ValueError("no " + x)


class Docs(BaseRetriever):
    def _get_relevant_documents(self, query, *, run_manager):
        return [Document(page_content=query + str(i), id=f"d{i}", metadata={"src": "kb"}) for i in range(3)]


def test_tool_retriever_errors_and_agent_loop(bus):
    h = CbusCallbackHandler(bus)
    with cbus.Consumer(bus, "t", start="oldest") as c:
        assert lookup.invoke({"city": "Oslo"}, config={"callbacks": [h]}) == "sunny in Oslo"
        with pytest.raises(ValueError):
            broken.invoke({"x": "y"}, config={"callbacks": [h]})
        docs = Docs().invoke("q", config={"callbacks": [h]})
        assert len(docs) == 3
        # an agent-style loop: the model picks the tool, the tool runs, the model answers
        model = FakeListChatModel(responses=["lookup:Paris", "It is sunny."])
        def agent(q, config):
            msg = model.invoke(q, config=config).content
            name, arg = msg.split(":")
            obs = lookup.invoke({"city": arg}, config=config)
            return model.invoke(obs, config=config).content
        assert RunnableLambda(agent).invoke("weather?", config={"callbacks": [h]}) == "It is sunny."
        evs = drain(c)
    kinds = [e.kind for e in evs]
    assert kinds[:4] == ["tool_start", "tool_end", "tool_start", "tool_error"]
    assert evs[0].name == "lookup" and evs[1].text == "sunny in Oslo"
    assert evs[3].name == "ValueError" and "no y" in evs[3].text
    assert kinds[4:6] == ["retriever_start", "retriever_end"] and evs[5].document_count == 3
    # the documents themselves, whole, in the GenAI retrieval shape
    assert json.loads(evs[5].text) == [{"id": f"d{i}", "content": f"q{i}", "metadata": {"src": "kb"}}
                                       for i in range(3)]
    loop = evs[6:]
    assert [e.kind for e in loop] == ["chain_start", "chat_model_start", "llm_end",
                                      "tool_start", "tool_end", "chat_model_start", "llm_end",
                                      "chain_end"]
    assert all(e.parent_run_id == loop[0].run_id for e in loop[1:-1])


def test_every_callback_of_the_base_handler_is_implemented():
    from langchain_core.callbacks import BaseCallbackHandler
    names = [n for n in dir(BaseCallbackHandler) if n.startswith("on_")]
    missing = [n for n in names if getattr(CbusCallbackHandler, n) is getattr(BaseCallbackHandler, n)
               and n != "on_stream_event"]
    assert missing == []
    assert CbusCallbackHandler.run_inline is True


def test_a_missing_bus_warns_once_and_does_nothing():
    h = CbusCallbackHandler("nosuchbus.lc")
    model = FakeListChatModel(responses=["a", "b"])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert model.invoke("x", config={"callbacks": [h]}).content == "a"
        assert model.invoke("x", config={"callbacks": [h]}).content == "b"
    assert len([x for x in w if "nosuchbus.lc" in str(x.message)]) == 1


def test_eight_threads_and_a_hundred_asyncio_runs(bus):
    cbus.destroy_bus(bus)
    cbus.create_bus(bus, capacity=65536)
    h = CbusCallbackHandler(bus)
    with cbus.Consumer(bus, "t", start="oldest") as c:
        def work(i):
            model = FakeListChatModel(responses=["r%d" % i])
            for _ in range(20):
                model.invoke("x", config={"callbacks": [h], "metadata": {"user_id": "u%d" % i}})
        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

        ah = AsyncCbusCallbackHandler(bus)
        async def one(i):
            m = GenericFakeChatModel(messages=iter(["a b c"]))
            return "".join([ch.content async for ch in m.astream(
                "q", config={"callbacks": [ah], "metadata": {"session_id": "a%d" % i}})])
        async def main():
            return await asyncio.gather(*(one(i) for i in range(100)))
        assert asyncio.run(main()) == ["a b c"] * 100
        evs = drain(c)
    by_user = {}
    for e in evs:
        if e.user:
            by_user[(e.user, e.kind)] = by_user.get((e.user, e.kind), 0) + 1
    for i in range(8):
        assert by_user[("u%d" % i, "chat_model_start")] == 20
        assert by_user[("u%d" % i, "llm_end")] == 20
    runs = {}
    for e in evs:
        if e.session.startswith("a"):
            runs.setdefault(e.run_id, []).append(e.kind)
    assert len(runs) == 100
    for kinds in runs.values():
        assert kinds[0] == "chat_model_start" and kinds[-1] == "llm_end"
        assert kinds.count("llm_new_token") == 5


def test_custom_events_retries_and_chain_errors(bus):
    from langchain_core.callbacks.manager import dispatch_custom_event
    h = CbusCallbackHandler(bus)
    tries = []

    def flaky(x):
        tries.append(x)
        dispatch_custom_event("progress", {"step": len(tries)})
        if len(tries) < 2:
            raise ConnectionError("try again")
        return "ok"

    with cbus.Consumer(bus, "t", start="oldest") as c:
        r = RunnableLambda(flaky).with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
        assert r.invoke("x", config={"callbacks": [h]}) == "ok"
        # RunnableRetry does not report retries (langchain-core 1.8.1); the
        # tenacity decorators of the LLM classes do, through the run manager:
        import tenacity
        rm = CallbackManager([h]).on_chain_start({"name": "llm-retry"}, {"q": 1})
        state = tenacity.RetryCallState(None, None, (), {})
        state.attempt_number = 1
        state.outcome = tenacity.Future(1)
        state.outcome.set_exception(ConnectionError("503"))
        state.next_action = tenacity.RetryAction(0.5)
        rm.on_retry(state)
        rm.on_chain_end({"ok": True})
        with pytest.raises(KeyError):
            RunnableLambda(lambda x: {}["k"]).invoke("x", config={"callbacks": [h]})
        evs = drain(c)
    kinds = [e.kind for e in evs]
    customs = [e for e in evs if e.kind == "custom"]
    assert [(e.name, e.text) for e in customs] == [("progress", '{"step": 1}'),
                                                  ("progress", '{"step": 2}')]
    retry = [e for e in evs if e.kind == "retry"]
    assert len(retry) == 1 and retry[0].attempt == 1 and "ConnectionError" in retry[0].text
    assert retry[0].backoff_ns == 500_000_000
    assert kinds[-2:] == ["chain_start", "chain_error"] and evs[-1].name == "KeyError"


def test_a_forked_worker_reopens_its_own_producer(bus):
    import os
    h = CbusCallbackHandler(bus)
    model = FakeListChatModel(responses=["p", "c", "p2"])
    with cbus.Consumer(bus, "t", start="oldest") as c:
        model.invoke("x", config={"callbacks": [h], "metadata": {"user_id": "parent"}})
        pid = os.fork()
        if pid == 0:  # a gunicorn/multiprocessing worker inheriting the handler
            try:
                model.invoke("x", config={"callbacks": [h], "metadata": {"user_id": "child"}})
                os._exit(0 if h._producer is not None and h._pid == os.getpid() else 1)
            except BaseException:
                os._exit(2)
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 0
        model.invoke("x", config={"callbacks": [h], "metadata": {"user_id": "parent"}})
        evs = drain(c)
    ends = [(e.user, e.pid) for e in evs if e.kind == "llm_end"]
    assert ends[0] == ("parent", os.getpid()) and ends[2] == ("parent", os.getpid())
    assert ends[1][0] == "child" and ends[1][1] == pid


def test_system_instructions_and_the_response_id_reach_the_bus(bus):
    """Issue 15: instructions a model takes apart from the history (here an
    invocation parameter `system`) ride on the start as
    gen_ai.system_instructions parts; the provider's response id (the
    message's response_metadata id, else a provider message id) on the end.
    A SystemMessage in the history stays in the messages."""
    h = CbusCallbackHandler(bus)
    model = GenericFakeChatModel(messages=iter([
        AIMessage(content="Rome.", response_metadata={"id": "chatcmpl-AbC123"}),
        AIMessage(content="Oslo.", id="msg_01XFDUDYJgAACzvnptvVoYEL"),
        AIMessage(content="Bern.", response_metadata={"id": "not an id"}),
    ]))
    with cbus.Consumer(bus, "t", start="oldest") as c:
        model.invoke([("system", "history's own"), ("human", "Capital of Italy?")],
                     config={"callbacks": [h]}, system="You are a geography tutor.")
        model.invoke("Capital of Norway?", config={"callbacks": [h]},
                     system=[{"type": "text", "text": "Be brief."}, "Answer in English."])
        model.invoke("Capital of Switzerland?", config={"callbacks": [h]})
        evs = drain(c)
    starts = [e for e in evs if e.kind == "chat_model_start"]
    ends = [e for e in evs if e.kind == "llm_end"]
    assert len(starts) == 3 and len(ends) == 3
    assert json.loads(starts[0].system) == [{"type": "text", "content": "You are a geography tutor."}]
    assert [m["role"] for m in json.loads(starts[0].messages)] == ["system", "user"]
    assert json.loads(starts[1].system) == [{"type": "text", "content": "Be brief."},
                                            {"type": "text", "content": "Answer in English."}]
    assert starts[2].system is None
    assert ends[0].response_id == "chatcmpl-AbC123" and ends[0].text == "Rome."
    assert ends[1].response_id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert ends[2].response_id is None and ends[2].text == "Bern."  # not an id: the end still arrives


def test_run_checks_the_response_id_before_emitting(bus):
    with cbus.Producer(bus) as p, cbus.Consumer(bus, "t", start="oldest") as c:
        r = p.run()
        for bad in ("", "has space", "x" * 257, "caf\u00e9", 7):
            with pytest.raises((ValueError, TypeError)):
                r.llm_end("out", response_id=bad)
        assert r.llm_end("out", response_id="x" * 256)
        assert r.llm_start("p", system="Be brief.")
        evs = drain(c)
    assert [e.kind for e in evs] == ["llm_end", "llm_start"]
    assert evs[0].response_id == "x" * 256 and evs[1].system == "Be brief."
