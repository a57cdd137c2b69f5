"""Logging callback, out of process: one log line per callback (LangChain
callbacks tutorial, 'logging').

    python bindings/python/examples/logging_handler.py --bus prod
"""
import argparse
import logging

import cbus

log = logging.getLogger("llm")


class Logging(cbus.Handler):
    def on_event(self, ev):
        if ev.kind != "llm_new_token":
            log.info("%s run=%s parent=%s user=%s model=%s %s", ev.kind, ev.run_id,
                     ev.parent_run_id, ev.user or "-", ev.model or "-",
                     (ev.name + " " if ev.name else "") + ev.text[:80])
        return False  # nothing else to do


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bus", default="prod")
    ap.add_argument("--name", default="logging")
    ap.add_argument("--idle", type=float, default=None, help="exit after N idle seconds")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s",
                        handlers=[logging.StreamHandler(__import__("sys").stdout)])
    cbus.run_handler(a.bus, a.name, Logging(), idle_timeout=a.idle,
                     ready=lambda c: print("listening", flush=True))


if __name__ == "__main__":
    main()
