"""chatcore.coldstart: a cold start's imports without the garbage collector, what they built frozen after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from chatcore.coldstart import collector_paused


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_block_runs_without_the_collector_and_what_it_built_is_frozen_after():
    gc.enable()
    frozen_before = gc.get_freeze_count()
    with collector_paused():
        assert not gc.isenabled()
        built = [[i] for i in range(10_000)]  # tracked containers, as modules and classes are
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(built)
    assert gc.get_count()[0] < 100  # nothing left young for the next collection to walk


def test_an_inner_block_leaves_restarting_the_collector_to_the_outer_one():
    gc.enable()
    with collector_paused():
        with collector_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_failing_block_restarts_the_collector():
    gc.enable()
    with pytest.raises(ImportError), collector_paused():
        raise ImportError("no such module")
    assert gc.isenabled()


def test_a_collector_stopped_before_stays_stopped():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()
