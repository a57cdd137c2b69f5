import json
import os
import signal
import subprocess
import sys
import time

import pytest

import cbus

EX = os.path.join(os.path.dirname(__file__), "..", "examples")


def start(args):
    pr = subprocess.Popen([sys.executable] + args, stdout=subprocess.PIPE, text=True)
    assert pr.stdout.readline().strip() == "listening"
    return pr


def emit_workload(bus):
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from cbus.langchain import CbusCallbackHandler

    @tool
    def search(q: str) -> str:
        """Search."""
        return "found " + q

    h = CbusCallbackHandler(bus)
    for i in range(3):
        msg = AIMessage(content="a b c", usage_metadata={"input_tokens": 10, "output_tokens": 3,
                                                         "total_tokens": 13})
        m = GenericFakeChatModel(messages=iter([msg]))
        cfg = {"callbacks": [h], "metadata": {"user_id": "u%d" % (i % 2),
                                              "ls_model_name": "gpt-4o"}}
        m.invoke("q", config=cfg)
        # GenericFakeChatModel streams without usage_metadata: tokens only
        list(GenericFakeChatModel(messages=iter(["d e f"])).stream("q", config=cfg))
        search.invoke({"q": "x"}, config=cfg)


def test_the_three_tutorial_examples_run(bus):
    procs = {n: start([os.path.join(EX, f), "--bus", bus, "--idle", "1.5"])
             for n, f in (("timing", "timing.py"), ("logging", "logging_handler.py"),
                          ("aggregate", "aggregate.py"))}
    emit_workload(bus)
    outs = {}
    for n, pr in procs.items():
        outs[n], _ = pr.communicate(timeout=30)
        assert pr.returncode == 0, n
    assert outs["timing"].count(" took ") >= 9 and outs["timing"].count("tool search") == 3
    assert "first token after" in outs["timing"]
    log_lines = [l for l in outs["logging"].splitlines() if l.startswith("llm ")]
    assert sum("chat_model_start" in l for l in log_lines) == 6
    assert sum("tool_start" in l and "search" in l for l in log_lines) == 3
    agg = json.loads(outs["aggregate"].strip().splitlines()[-1])
    assert agg["models"]["gpt-4o"]["calls"] == 6
    assert agg["models"]["gpt-4o"]["input_tokens"] == 30
    assert agg["models"]["gpt-4o"]["output_tokens"] == 9
    assert agg["models"]["gpt-4o"]["tokens_streamed"] > 0
    assert agg["users"] == {"u0": 4, "u1": 2} and agg["tools"] == {"search": 3}


HANDLER = r"""
import os, sys, cbus
out = open(sys.argv[2], "a")
class H(cbus.Handler):
    def on_text(self, ev):
        out.write(ev.text + "\n")
    def on_batch_done(self):
        out.flush(); os.fsync(out.fileno())   # durable before the commit
cbus.run_handler(sys.argv[1], "durable", H(), batch=8, idle_timeout=float(sys.argv[3]),
                 ready=lambda c: print("listening", flush=True))
"""


def test_a_handler_killed_with_sigkill_resumes_where_it_committed(bus, tmp_path):
    script = tmp_path / "h.py"
    script.write_text(HANDLER)
    seen = tmp_path / "seen"
    pr = start([str(script), bus, str(seen), "60"])
    n = 1500
    with cbus.Producer(bus) as p:
        run = p.run()
        for i in range(n):
            run.text(str(i))
            if i == 500:
                deadline = time.monotonic() + 20
                while not seen.exists() or len(seen.read_text().split()) < 100:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                pr.send_signal(signal.SIGKILL)
                pr.wait(10)
                assert len(seen.read_text().split()) <= 501  # the rest is the restart's
        # the dead handler's place is kept; the restart resumes from it
        pr = start([str(script), bus, str(seen), "1.5"])
        out, _ = pr.communicate(timeout=60)
        assert pr.returncode == 0
        assert p.stats()["dropped"] == 0
    got = seen.read_text().split()
    assert set(got) == {str(i) for i in range(n)}  # nothing missed
    # at least once: only the batch in flight at the kill comes twice
    assert len(got) - n <= 8


def test_run_handler_checks_its_arguments(bus):
    with pytest.raises(TypeError, match="handler"):
        cbus.run_handler(bus, "x", object())
    with pytest.raises(ValueError, match="batch"):
        cbus.run_handler(bus, "x", cbus.Handler(), batch=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        cbus.run_handler(bus, "x", cbus.Handler(), idle_timeout=-1)
    assert cbus.run_handler(bus, "x", cbus.Handler(), idle_timeout=0.1) == 0
