"""Cold import of a handler module in a fresh interpreter (shared by the benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def import_once(mode: str, path: str, name: str, env: dict[str, str]) -> tuple[float, bool]:
    """Seconds one import took inside a fresh process, and whether it pulled in ``openai``.
    ``mode`` "baseline" imports only boto3 (what every Lambda pays anyway)."""
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, mode, path, name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} import of {name} failed (exit {proc.returncode}):\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), bool(result["openai"])
