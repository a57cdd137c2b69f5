"""Aggregating callback, out of process: calls, tokens, tool uses and errors
per model and user, printed as JSON at exit (LangChain callbacks tutorial,
'aggregation').

    python bindings/python/examples/aggregate.py --bus prod --idle 5
"""
import argparse
import json
from collections import defaultdict

import cbus


class Aggregate(cbus.Handler):
    def __init__(self):
        self.models = defaultdict(lambda: {"calls": 0, "input_tokens": 0, "output_tokens": 0,
                                           "errors": 0, "tokens_streamed": 0})
        self.users = defaultdict(int)
        self.tools = defaultdict(int)

    def on_llm_new_token(self, ev):
        self.models[ev.model or "-"]["tokens_streamed"] += 1

    def on_llm_end(self, ev):
        m = self.models[ev.model or "-"]
        m["calls"] += 1
        u = ev.usage or {}
        m["input_tokens"] += u.get("input_tokens", 0)
        m["output_tokens"] += u.get("output_tokens", 0)
        self.users[ev.user or "-"] += 1

    def on_llm_error(self, ev):
        self.models[ev.model or "-"]["errors"] += 1

    def on_tool_start(self, ev):
        self.tools[ev.name or "-"] += 1

    def summary(self):
        return {"models": dict(self.models), "users": dict(self.users),
                "tools": dict(self.tools)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bus", default="prod")
    ap.add_argument("--name", default="aggregate")
    ap.add_argument("--idle", type=float, default=None, help="exit after N idle seconds")
    a = ap.parse_args()
    agg = Aggregate()
    cbus.run_handler(a.bus, a.name, agg, idle_timeout=a.idle,
                     ready=lambda c: print("listening", flush=True))
    print(json.dumps(agg.summary(), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
