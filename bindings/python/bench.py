"""Benchmarks of the Python package (figures in the README).

    build/venv/bin/python bindings/python/bench.py [--n 1000000]

1. a direct Run.llm_new_token() call (no consumer attached: the emit path
   alone), against an empty Python method call for scale;
2. per-callback cost through LangChain's own callback manager
   (CallbackManagerForLLMRun.on_llm_new_token), for a no-op handler, the
   cbus handler and a handler appending a JSON line to a file: the cbus
   handler's overhead is its figure minus the no-op's.
Best of 5 rounds each, ns per call.
"""
import argparse
import json
import os
import tempfile
import time
import sys
import uuid

# the installed package, not the source folder beside this script
sys.path = [x for x in sys.path if os.path.abspath(x or ".") != os.path.dirname(os.path.abspath(__file__))]
import cbus  # noqa: E402


def best(fn, n, rounds=5):
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn(n)
        out.append((time.perf_counter_ns() - t0) / n)
    return min(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bus", default="pybench%d" % os.getpid())
    a = ap.parse_args()
    cbus.destroy_bus(a.bus)
    cbus.create_bus(a.bus, capacity=1 << 16)
    try:
        with cbus.Producer(a.bus, "bench") as p:
            run = p.run(model="gpt-4o", user="bench")

            class Empty:
                def m(self, x):
                    return True
            e = Empty()

            def direct(n):
                f = run.llm_new_token
                for _ in range(n):
                    f("tok")

            def empty(n):
                f = e.m
                for _ in range(n):
                    f("tok")
            print("empty Python method call        %7.1f ns" % best(empty, a.n))
            print("Run.llm_new_token (direct)      %7.1f ns" % best(direct, a.n))

        from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
        from cbus.langchain import CbusCallbackHandler

        class Noop(BaseCallbackHandler):
            run_inline = True

            def on_llm_new_token(self, token, **kw):
                pass

        fd, path = tempfile.mkstemp(suffix=".jsonl")
        os.close(fd)
        jf = open(path, "a")

        class JsonLines(BaseCallbackHandler):
            run_inline = True

            def on_llm_new_token(self, token, *, run_id, **kw):
                jf.write(json.dumps({"event": "llm_new_token", "run_id": str(run_id),
                                     "token": token}) + "\n")

        def through(handler):
            rm = CallbackManager([handler]).on_llm_start({"name": "bench"}, ["hi"],
                                                         run_id=uuid.uuid4())[0]

            def loop(n):
                f = rm.on_llm_new_token
                for _ in range(n):
                    f("tok")
            return loop
        m = max(a.n // 10, 1000)
        noop = best(through(Noop()), m)
        cb = best(through(CbusCallbackHandler(a.bus)), m)
        js = best(through(JsonLines()), m)
        print("LangChain manager, no-op handler %7.1f ns" % noop)
        print("LangChain manager, cbus handler  %7.1f ns  (+%.1f ns)" % (cb, cb - noop))
        print("LangChain manager, JSON lines    %7.1f ns  (+%.1f ns)" % (js, js - noop))
        jf.close()
        os.unlink(path)
    finally:
        cbus.destroy_bus(a.bus)


if __name__ == "__main__":
    main()
