"""Timing callback, out of process: how long each LLM call, tool and chain
took and the time to first token (LangChain callbacks tutorial, 'timing').

    python bindings/python/examples/timing.py --bus prod
"""
import argparse

import cbus


class Timing(cbus.Handler):
    def __init__(self):
        self.started = {}  # run_id -> start ts

    def on_event(self, ev):
        if ev.kind.endswith("_start"):
            self.started[ev.run_id] = ev.ts_mono_ns
        return True

    def _done(self, ev, what):
        t0 = self.started.pop(ev.run_id, None)
        if t0 is not None:
            print("%s %s %s took %.3f ms" % (what, ev.name or ev.model or "-", ev.run_id,
                                             (ev.ts_mono_ns - t0) / 1e6), flush=True)

    def on_llm_end(self, ev):
        ttft = (ev.usage or {}).get("ttft_ns")
        self._done(ev, "llm")
        if ttft is not None:
            print("llm %s first token after %.3f ms" % (ev.run_id, ttft / 1e6), flush=True)

    def on_tool_end(self, ev):
        self._done(ev, "tool")

    def on_chain_end(self, ev):
        self._done(ev, "chain")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bus", default="prod")
    ap.add_argument("--name", default="timing")
    ap.add_argument("--idle", type=float, default=None, help="exit after N idle seconds")
    a = ap.parse_args()
    cbus.run_handler(a.bus, a.name, Timing(), idle_timeout=a.idle,
                     ready=lambda c: print("listening", flush=True))


if __name__ == "__main__":
    main()
