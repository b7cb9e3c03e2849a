"""The load benchmark's CI smoke: ``python -m bench.load --smoke`` as the README documents it (a small N, the whole
local stack in subprocesses on loopback). Asserts what must hold at any load, never timings: no error of any kind,
and every acknowledged user message and every completed answer stored in DynamoDB exactly once, in order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_load_smoke_loses_nothing(tmp_path: Path):
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    turns = result["users"] * result["sessions_per_user"] * result["turns_per_session"]
    assert [level["concurrency"] for level in result["levels"]] == [4]
    for level in result["levels"]:
        errors = level["errors"]
        assert (errors["non_2xx"], errors["error_chunks"], errors["no_done"], errors["exceptions"]) == (0, 0, 0, 0)
        assert level["app"]["turns"] == level["llm"]["turns"] == turns
    check = result["verification"]
    sent = (turns + 3) * len(result["levels"])  # and each level's three warm-up turns
    assert check["acknowledged"] == check["stored_once"] == sent
    assert check["completed"] == check["answers_stored_once"] == sent
    assert (check["lost"], check["duplicated"], check["answers_lost_or_changed"]) == (0, 0, 0)
    assert (check["out_of_order"], check["leases_held"], check["unacknowledged_stored"]) == (0, 0, 0)
    assert check["problems"] == []
