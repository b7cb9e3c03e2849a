"""A cold start's imports without the cyclic garbage collector (``functions/*/app.py``, ``chatcore.web.serve``).

Importing a handler builds tens of thousands of container objects (modules, classes, functions, botocore's and
pydantic's tables: 80,000 for the sessions function) that live as long as the process. With the collector running,
their allocation triggers about a hundred collections that walk them again and again and find nothing: 6-10% of each
function's imports (``bench/layer_bytecode.py`` measures it). ``collector_paused`` stops the collector for the
imports, then freezes every object alive (``gc.freeze``: moved out of every later collection, so the first request
does not pay one walk over all of them) and starts the collector again. In Lambda that is what init built; reference
counting still frees what dies, but cyclic garbage among frozen objects is never collected: in Lambda a few hundred
objects, once. A process that imports handler modules again and again freezes its whole heap each time: the local
stack loads them once per start, and the tests hand the heap back after each test (``tests/conftest.py``).

This module imports nothing of chatcore, so a handler can enter it before anything else.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the collector stopped; on leaving, freeze what exists and restart the collector, unless
    it was stopped already (an outer block restarts it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
