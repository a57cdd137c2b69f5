"""cbus: emit and read LLM callback events on a cbus shared-memory bus.

    import cbus
    with cbus.Producer("prod") as p:
        run = p.run(model="gpt-4o", user="alice")
        run.llm_start("Hello")
        run.llm_new_token("Hi")
        run.llm_end("Hi", input_tokens=3, output_tokens=1)

    with cbus.Consumer("prod", "mine", start="oldest") as c:
        for ev in c.poll():
            print(ev.kind, ev.run_id, ev.usage)
"""
from ._cbus import (Consumer, Error, Event, Producer, Run, create_bus, destroy_bus,
                    library_version, now_ns)

from .handler import Handler, run_handler  # noqa: E402

__all__ = ["Handler", "run_handler", "Consumer", "Error", "Event", "Producer", "Run", "create_bus", "destroy_bus",
           "library_version", "now_ns"]
__version__ = "0.1.0"
