from ._cbus import (Consumer as Consumer, Error as Error, Event as Event, Producer as Producer,
                    Run as Run, create_bus as create_bus, destroy_bus as destroy_bus,
                    library_version as library_version, now_ns as now_ns)

__version__: str
from .handler import Handler as Handler, run_handler as run_handler
