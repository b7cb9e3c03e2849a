"""bench/load.py's DynamoDB check finds what it claims to: a lost, a duplicated or a reordered message, a changed
answer, a lease left held (the smoke in tests/e2e/test_load_smoke.py asserts it found none)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.load import SessionRun, Turn, Verification, check_session

NOW = 1_000_000


def _run() -> SessionRun:
    run = SessionRun(0, 0, "s")
    for i in range(3):
        run.turns.append(Turn(f"q{i}", f"m{i}", status=200, done=True, answer=f"a{i}"))
    return run


def _stored(run: SessionRun) -> list[dict[str, Any]]:
    stored: list[dict[str, Any]] = []
    for turn in run.turns:
        stored.append({"role": "user", "content": turn.text, "client_message_id": turn.message_id})
        stored.append({"role": "assistant", "content": turn.answer, "status": "complete"})
    return [{**m, "seq": i} for i, m in enumerate(stored, start=1)]


def _check(run: SessionRun, stored: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> Verification:
    v = Verification(1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    check_session(v, run, stored, meta, NOW)
    return v


def test_everything_stored_once_in_order_is_ok():
    run = _run()
    v = _check(run, _stored(run))
    assert v.ok and (v.acknowledged, v.stored_once, v.completed, v.answers_stored_once) == (3, 3, 3, 3)


@pytest.mark.parametrize(
    ("damage", "finding"),
    [
        (lambda s: s[:2] + s[4:], "lost"),  # the second user message and its answer are gone
        (lambda s: s[:2] + s[:2] + s[2:], "duplicated"),
        (lambda s: s[2:4] + s[:2] + s[4:], "out_of_order"),
        (lambda s: [*s[:3], {**s[3], "content": "changed"}, *s[4:]], "answers_lost_or_changed"),
        (lambda s: [*s[:3], {**s[3], "status": "partial"}, *s[4:]], "answers_lost_or_changed"),
        (lambda s: [*s, {"role": "assistant", "content": "a2", "status": "complete"}], "out_of_order"),
    ],
)
def test_damage_is_found(damage: Any, finding: str):
    run = _run()
    v = _check(run, damage(_stored(run)))
    assert not v.ok and getattr(v, finding) >= 1 and v.problems


def test_a_held_lease_is_found_and_an_expired_one_is_not():
    run = _run()
    held = {"active_turn_id": {"S": "turn_x"}, "active_turn_expires": {"N": str(NOW + 60)}}
    assert _check(run, _stored(run), held).leases_held == 1
    expired = {"active_turn_id": {"S": "turn_x"}, "active_turn_expires": {"N": str(NOW - 1)}}
    assert _check(run, _stored(run), expired).ok


def test_an_unacknowledged_message_is_not_expected_but_counted_when_stored():
    run = _run()
    run.turns[2].status = 503
    stored = _stored(run)[:5]  # the refused message stored anyway, its answer not
    v = _check(run, stored)
    assert v.ok and v.acknowledged == 2 and v.unacknowledged_stored == 1
