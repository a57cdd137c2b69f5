import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

import cbus


def drain(c, want, timeout=10.0):
    """Polls until `want` events arrived (or fails after timeout)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < want:
        got = c.poll(256)
        out.extend(got)
        if not got:
            assert time.monotonic() < deadline, "only %d of %d events" % (len(out), want)
            c.wait(0.1)
    return out


def test_every_kind_round_trips_in_order_with_ids_strings_and_usage(bus):
    with cbus.Consumer(bus, "reader", start="oldest") as c, cbus.Producer(bus, "py") as p:
        rid = uuid.uuid4()
        run = p.run(provider="openai", model="gpt-4o", user="alice", session="s1",
                    request_id="req-1", agent="planner", tenant="acme", run_id=rid,
                    tags=["a", "b"], metadata={"k": "v", "n": 3})
        assert run.run_id == rid and run.parent_run_id is None
        assert isinstance(run.trace_id, uuid.UUID)
        tool = run.child()
        assert tool.parent_run_id == rid and tool.trace_id == run.trace_id
        sent = [
            run.chain_start("chain", '{"q": 1}'),
            run.llm_start("Hello", prompt_count=1, est_input_tokens=5, max_tokens=100),
            run.chat_model_start("hi", messages='[{"role":"user"}]'),
            run.llm_new_token("He"),
            run.llm_new_token("llo"),
            run.chat_model_stream("x"),
            run.llm_end("Hello", input_tokens=7, output_tokens=2, cache_read_tokens=0,
                        finish_reason="stop"),
            run.llm_error("RateLimitError", "slow down", http_status=429),
            tool.tool_start("search", "cats"),
            tool.tool_event("progress", "50%"),
            tool.tool_end("3 cats"),
            tool.tool_error("ValueError", "bad"),
            run.agent_action("search", "cats"),
            run.agent_finish("done"),
            run.retriever_start("docs", "query"),
            run.retriever_end(document_count=4),
            run.retriever_error("IOError", "gone"),
            run.text("some text"),
            run.retry(attempt=2, backoff_ns=1000, reason="429"),
            run.custom("my_event", '{"x": 1}'),
            run.chain_error("KeyError", "k"),
            run.chain_end("out"),
        ]
        assert all(sent)
        evs = drain(c, len(sent))
    kinds = [e.kind for e in evs]
    assert kinds == ["chain_start", "llm_start", "chat_model_start", "llm_new_token",
                     "llm_new_token", "chat_model_stream", "llm_end", "llm_error",
                     "tool_start", "tool_event", "tool_end", "tool_error", "agent_action",
                     "agent_finish", "retriever_start", "retriever_end", "retriever_error",
                     "text", "retry", "custom", "chain_error", "chain_end"]
    first = evs[0]
    assert first.run_id == rid and first.parent_run_id is None
    assert (first.provider, first.model, first.user, first.session, first.request_id,
            first.agent, first.tenant) == ("openai", "gpt-4o", "alice", "s1", "req-1",
                                           "planner", "acme")
    assert first.name == "chain" and first.text == '{"q": 1}'
    assert first.tags == ["a", "b"] and first.metadata == {"k": "v", "n": "3"}
    assert first.pid == os.getpid()
    assert evs[2].messages == '[{"role":"user"}]'
    assert [e.token_index for e in evs[3:5]] == [0, 1] and evs[4].preview == "llo"
    usage = evs[6].usage
    # absent is not zero: reasoning and cache_creation were not given
    assert usage["input_tokens"] == 7 and usage["output_tokens"] == 2
    assert usage["cache_read_tokens"] == 0 and usage["finish_reason"] == "stop"
    assert "reasoning_tokens" not in usage and "cache_creation_tokens" not in usage
    assert "duration_ns" in usage and "ttft_ns" in usage  # filled from the run's times
    assert evs[7].http_status == 429 and evs[7].name == "RateLimitError"
    assert evs[8].parent_run_id == rid and evs[8].run_id == tool.run_id
    assert evs[15].document_count == 4
    assert evs[18].attempt == 2 and evs[18].backoff_ns == 1000
    assert evs[0].usage is None and evs[0].http_status is None
    ids = [e.event_id for e in evs]
    assert ids == sorted(ids)


def test_long_text_is_carried_whole_in_the_body(bus):
    big = "x" * 5000 + "é"
    with cbus.Consumer(bus, "r", start="oldest") as c, cbus.Producer(bus) as p:
        p.run().llm_start(big)
        (ev,) = drain(c, 1)
    assert ev.body is not None and ev.text == big and len(ev.preview) < len(big)


def test_surrogates_and_nul_are_handled(bus):
    with cbus.Consumer(bus, "r", start="oldest") as c, cbus.Producer(bus) as p:
        run = p.run(user="bad\udcffuser")
        assert run.llm_start("a\x00b")
        assert run.llm_new_token("t\x00k")
        assert run.tool_start("x\ud800", None)
        evs = drain(c, 3)
    assert evs[0].user == "bad?user"
    assert evs[0].text == "a"  # C strings: cut at the NUL
    assert evs[1].preview == "t"  # the preview field is a C string: read to its NUL
    assert evs[2].name == "x?"


@pytest.mark.parametrize("call,exc,word", [
    (lambda r: r.llm_start(3), TypeError, "prompt"),
    (lambda r: r.llm_start("x", max_tokens=-1), ValueError, "max_tokens"),
    (lambda r: r.llm_start("x", max_tokens="5"), TypeError, "max_tokens"),
    (lambda r: r.llm_end(input_tokens=2**40), ValueError, "input_tokens"),
    (lambda r: r.llm_end(output_tokens=1.5), TypeError, "output_tokens"),
    (lambda r: r.llm_end(finish_reason=3), TypeError, "finish_reason"),
    (lambda r: r.llm_new_token(b"x"), TypeError, "token"),
    (lambda r: r.llm_error("e", "m", http_status=1000), ValueError, "http_status"),
    (lambda r: r.retriever_end(document_count=True), TypeError, "document_count"),
    (lambda r: r.tool_start(name=object()), TypeError, "name"),
    (lambda r: r.child(run_id="nope"), ValueError, "run_id"),
    (lambda r: r.child(parent_run_id=5), TypeError, "parent_run_id"),
    (lambda r: r.child(tags=[1]), TypeError, "tags"),
    (lambda r: r.child(metadata=[1]), TypeError, "metadata"),
    (lambda r: r.child(model=1), TypeError, "model"),
    (lambda r: r.child(colour="red"), TypeError, "colour"),
])
def test_wrong_arguments_raise_naming_the_argument(bus, call, exc, word):
    with cbus.Producer(bus) as p:
        with pytest.raises(exc, match=word):
            call(p.run())


def test_bad_names_and_options(bus):
    with pytest.raises(ValueError, match="bus"):
        cbus.Producer("../etc")
    with pytest.raises(TypeError, match="bus"):
        cbus.Producer(5)
    with pytest.raises(cbus.Error) as ei:
        cbus.Producer("nosuchbus%d" % os.getpid())
    assert isinstance(ei.value, OSError) and ei.value.errno == 2
    with pytest.raises(ValueError, match="name"):
        cbus.Consumer(bus, "")
    with pytest.raises(ValueError, match="start"):
        cbus.Consumer(bus, "c", start="middle")
    with pytest.raises(TypeError, match="timeout"):
        with cbus.Consumer(bus, "c") as c:
            c.wait("1")
    with cbus.Consumer(bus, "c") as c:
        with pytest.raises(ValueError, match="max"):
            c.poll(0)
        with pytest.raises(ValueError, match="max"):
            c.poll(100000)
    assert cbus.create_bus(bus, exist_ok=True) is False
    with pytest.raises(cbus.Error):
        cbus.create_bus(bus)


def test_closing_twice_and_using_closed_objects(bus):
    p = cbus.Producer(bus)
    run = p.run()
    p.close()
    p.close()
    assert p.closed
    assert run.llm_start("x") is False  # an emit never raises into the host
    assert run.admit() == ("allow", 0.0)
    with pytest.raises(ValueError, match="closed"):
        p.stats()
    c = cbus.Consumer(bus, "c")
    c.close()
    c.close()
    for call in (c.poll, c.commit, c.stats, lambda: c.wait(0), lambda: next(iter(c))):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_the_module_exports_no_cbus_symbol():
    # The library is compiled into the module with hidden visibility: dlsym()
    # finds PyInit__cbus and no cbus_* function (an exported one could be
    # interposed by another libcbus.so loaded in the same process).
    import ctypes
    lib = ctypes.CDLL(cbus._cbus.__file__)
    assert hasattr(lib, "PyInit__cbus")
    for sym in ("cbus_producer_open", "cbus_llm_new_token", "cbus_consumer_open",
                "cbus_bus_create", "cbus_ctx_init"):
        assert not hasattr(lib, sym), sym


def test_stats_and_admit(bus):
    with cbus.Consumer(bus, "c", start="oldest") as c, cbus.Producer(bus) as p:
        run = p.run(user="u")
        for _ in range(10):
            run.text("t")
        assert p.stats()["emitted"] == 10 and p.stats()["dropped"] == 0
        assert run.admit() == ("allow", 0.0)
        drain(c, 10)
        c.commit()
        st = c.stats()
    assert st["consumed"] == 10 and st["lost"] == 0 and st["cursor"] == st["read_pos"]


def test_iteration_blocks_with_the_gil_released(bus):
    with cbus.Consumer(bus, "c") as c, cbus.Producer(bus) as p:
        run = p.run()

        def emit():
            time.sleep(0.2)  # the main thread is inside next() by then
            for i in range(5):
                run.text(str(i))

        t = threading.Thread(target=emit)
        t.start()
        it = iter(c)
        got = [next(it).text for _ in range(5)]
        t.join()
        assert got == ["0", "1", "2", "3", "4"]
        assert c.wait(0.05) is False


def test_eight_threads_lose_nothing(bus):
    # The ring holds every event: a lossless wait in the emitting thread holds
    # the GIL, so a consumer in the same process cannot drain while it waits
    # (consumers belong in another process; this test is about threads).
    n = 2000
    cbus.destroy_bus(bus)
    cbus.create_bus(bus, capacity=32768)
    with cbus.Consumer(bus, "c", lossless=True, start="oldest") as c, cbus.Producer(bus) as p:
        def work(i):
            run = p.run(user="t%d" % i)
            for k in range(n):
                assert run.llm_new_token(str(k))

        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        seen = {}
        while any(t.is_alive() for t in ts) or sum(seen.values()) < 8 * n:
            for e in c.poll(256):
                seen[e.user] = seen.get(e.user, 0) + 1
            c.commit()
            if not c.wait(0.2) and not any(t.is_alive() for t in ts):
                break
        for t in ts:
            t.join()
        assert p.stats()["dropped"] == 0
    assert seen == {"t%d" % i: n for i in range(8)}


def test_keep_and_resume_continue_after_the_last_commit(bus):
    with cbus.Producer(bus) as p:
        run = p.run()
        c = cbus.Consumer(bus, "durable", lossless=True, start="oldest", keep=True)
        for i in range(6):
            run.text(str(i))
        got = drain(c, 3) if False else []
        while len(got) < 3:
            got.extend(c.poll(3 - len(got)))
        c.commit()
        c.close()
        c = cbus.Consumer(bus, "durable", lossless=True, start="resume", keep=True)
        rest = drain(c, 3)
        c.close()
    assert [e.text for e in got] == ["0", "1", "2"]
    assert [e.text for e in rest] == ["3", "4", "5"]


def _sleeping_in_futex(pid):
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().startswith("futex")
    except OSError:
        return False


def test_ctrl_c_wakes_a_blocked_wait(bus):
    # The child installs Python's own SIGINT handler: a shell that starts a
    # test run in the background hands its children SIGINT ignored, and then
    # Python installs none (a CI run launched that way failed here).
    code = ("import cbus,signal,sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "c = cbus.Consumer(%r, 'sig')\n"
            "print('ready', flush=True)\n"
            "try:\n"
            "    c.wait()\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted', flush=True)\n" % bus)
    pr = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert pr.stdout.readline().strip() == "ready"
    # The signal must find it blocked in the wait (asleep on the bus's futex),
    # not on its way there: look, rather than sleep a guessed time.
    deadline = time.monotonic() + 30
    while not _sleeping_in_futex(pr.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _sleeping_in_futex(pr.pid), "the child never blocked in wait()"
    pr.send_signal(signal.SIGINT)
    out, _ = pr.communicate(timeout=30)
    assert out.strip() == "interrupted" and pr.returncode == 0


def test_fork_after_open_child_reopens_and_parent_is_intact(bus):
    with cbus.Consumer(bus, "c", start="oldest") as c, cbus.Producer(bus, "parent") as p:
        run = p.run(user="parent")
        run.text("before")
        pid = os.fork()
        if pid == 0:  # a gunicorn/multiprocessing worker
            ok = run.text("inherited") is False and p.closed
            p.close()  # frees the child's copy only
            with cbus.Producer(bus, "child") as q:
                ok = ok and q.run(user="child").text("from child")
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        run.text("after")
        assert p.stats()["emitted"] == 2  # the child's close left our entry alone
        evs = drain(c, 3)
    assert [(e.user, e.text) for e in evs] == [("parent", "before"), ("child", "from child"),
                                               ("parent", "after")]


def test_a_newer_producers_section_is_counted_not_shown(bus):
    """A body section of a type this build does not know (a newer producer's)
    is skipped and counted in skipped_sections, as cbusctl's JSON says
    skipped_sections; the known sections beside it still read.  The newer
    producer is made by retyping the response id section in the segment."""
    marker = "resp-NEWER-0123456789"
    with cbus.Producer(bus) as p:
        assert p.run().llm_end("out " + "y" * 300, response_id=marker)
        assert p.run().llm_end("plain", response_id="resp-known")
    path = "/dev/shm/cbus." + bus
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        at = m.find(marker.encode())
        assert at >= 16, "the response id is in the segment"
        typ, flags, ln = struct.unpack_from("<HHI", m, at - 16)
        assert (typ, ln) == (6, len(marker)), "a CBUS_BODY_RESPONSE_ID section header"
        struct.pack_into("<H", m, at - 16, 77)
    with cbus.Consumer(bus, "r", start="oldest") as c:
        newer, known = drain(c, 2)
    assert newer.response_id is None and newer.skipped_sections == 1
    assert newer.text == "out " + "y" * 300
    assert known.response_id == "resp-known" and known.skipped_sections == 0
