"""Cold import of a handler module in a fresh interpreter (shared by the benchmarks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT = 120.0

# Runs in a fresh interpreter; argv[1] is "handler" or "baseline", argv[2] the handler path, argv[3] a module name.
IMPORT_SCRIPT = """
import importlib.util, json, sys, time
mode, path, name = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if mode == "handler":
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
else:
    import boto3
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "openai": "openai" in sys.modules}))
"""


def run_fresh(
    script: str, args: list[str], env: dict[str, str], *, importtime: bool = False, isolated: bool = False
) -> tuple[dict[str, Any], str]:
    """Run ``script`` in a fresh interpreter; its last stdout line is a JSON object (returned with its stderr).
    ``importtime`` runs it under ``python -X importtime`` (the stderr then holds the import tree); ``isolated``
    without site-packages or bytecode writes (``-S -B``: only ``PYTHONPATH`` and the standard library, as Lambda)."""
    flags = ["-X", "importtime"] if importtime else []
    if isolated:
        flags += ["-S", "-B"]
    python = getattr(sys, "_base_executable", sys.executable) if isolated else sys.executable
    proc = subprocess.run(
        [python, *flags, "-c", script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fresh process {args[:1]} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result, proc.stderr


def import_once(mode: str, path: str, name: str, env: dict[str, str]) -> tuple[float, bool]:
    """Seconds one import took inside a fresh process, and whether it pulled in ``openai``.
    ``mode`` "baseline" imports only boto3 (what every Lambda pays anyway)."""
    result, _ = run_fresh(IMPORT_SCRIPT, [mode, path, name], env)
    return float(result["seconds"]), bool(result["openai"])


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def import_self_times(stderr: str) -> Counter[str]:
    """Microseconds spent importing each top-level package (the sum of its modules' own times), from the stderr of a
    ``python -X importtime`` run. Self times add up without double counting, unlike the cumulative column."""
    totals: Counter[str] = Counter()
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            totals[match.group(4).split(".")[0]] += int(match.group(1))
    return totals
