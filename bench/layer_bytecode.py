"""The built layer's bytecode, and the imports' paused garbage collector: each function's ``import app`` from the
layer as shipped, against the same layer as SAM's python builder shipped it (sources only, which every cold start
had to compile: /opt is read-only), and against the layer as shipped with the collector running through the imports
(``chatcore.coldstart.collector_paused`` made a no-op in that process: ``gc.disable`` and ``gc.freeze`` do nothing).

Run from the repo root: ``uv run python -m bench.layer_bytecode [--runs 7] [--layer DIR] [--json PATH]``.

Without ``--layer`` it builds the layer as ``sam build`` does, with ``make build-ChatCoreLayer`` of
layers/chatcore/Makefile, for this machine's architecture (``LAYER_ARCH``), into a temporary folder; with it, it
reads a built layer's ``python`` folder (e.g. ``.aws-sam/build/ChatCoreLayer/python``). The sources-only copy is
that folder without its ``__pycache__`` folders. Each import runs in a fresh ``python3.12 -S -B`` (no
site-packages, nothing written) with only the layer and the function's folder on ``sys.path``, as in Lambda;
medians over ``--runs`` rounds, each round every job once in a rotated order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.cold_import import ROOT, run_fresh
from tests.sam_build.sam import HOST_ARCH, SAM_BIN

LAYER_SOURCE = ROOT / "layers" / "chatcore"
FUNCTIONS = ("sessions", "chat", "tool_worker", "continuation", "callback")
IMPORT = (
    "import json, time; t = time.perf_counter(); import app; print(json.dumps({'seconds': time.perf_counter() - t}))"
)
# The collector left running: chatcore.coldstart's pause undone before anything is imported.
COLLECTOR_ON = "import gc; gc.disable = gc.freeze = lambda: None\n"
KINDS = ("bytecode", "sources", "collector")


@dataclass
class FunctionImport:
    function: str
    bytecode_ms: float
    sources_ms: float
    collector_on_ms: float

    @property
    def ratio(self) -> float:
        return self.bytecode_ms / self.sources_ms

    @property
    def paused_ratio(self) -> float:
        return self.bytecode_ms / self.collector_on_ms


def build_layer(into: Path) -> Path:
    """``make build-ChatCoreLayer`` as sam build runs it (its own copy of the sources, ARTIFACTS_DIR set)."""
    work = into / "source"
    shutil.copytree(LAYER_SOURCE, work, ignore=shutil.ignore_patterns("__pycache__"))
    artifacts = into / "artifacts"
    artifacts.mkdir()
    env = {**os.environ, "ARTIFACTS_DIR": str(artifacts), "LAYER_ARCH": HOST_ARCH}
    if SAM_BIN.is_dir():
        env["PATH"] = f"{SAM_BIN}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(["make", "-s", "build-ChatCoreLayer"], cwd=work, env=env, check=True, capture_output=True)
    return artifacts / "python"


def sources_only(layer: Path, into: Path) -> Path:
    copy = into / "sources" / "python"
    shutil.copytree(layer, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def import_seconds(layer: Path, function: str, *, collector_on: bool = False) -> float:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{layer}{os.pathsep}{ROOT / 'functions' / function}"}
    result, _ = run_fresh(COLLECTOR_ON + IMPORT if collector_on else IMPORT, [], env, isolated=True)
    return float(result["seconds"])


def measure(layer: Path, sources: Path, runs: int) -> list[FunctionImport]:
    jobs = [(function, kind) for function in FUNCTIONS for kind in KINDS]
    folders = {"bytecode": layer, "sources": sources, "collector": layer}
    for function, kind in jobs:  # one discarded run of each (OS page cache)
        import_seconds(folders[kind], function, collector_on=kind == "collector")
    seconds: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    for i in range(runs):
        for function, kind in jobs[i % len(jobs) :] + jobs[: i % len(jobs)]:
            seconds[function, kind].append(import_seconds(folders[kind], function, collector_on=kind == "collector"))
    return [
        FunctionImport(function, *(statistics.median(seconds[function, kind]) * 1000 for kind in KINDS))
        for function in FUNCTIONS
    ]


def render(results: list[FunctionImport], runs: int, layer: Path, built: bool) -> str:
    origin = f"built here with make build-ChatCoreLayer ({HOST_ARCH})" if built else str(layer)
    lines = [
        f"Layer bytecode (Python {platform.python_version()}, {platform.machine()}): `import app` in a fresh"
        f" python -S -B, median of {runs} runs",
        f"layer: {origin}",
        f"   {'function':<14}{'bytecode':>10}{'sources':>10}{'ratio':>8}{'collector on':>14}{'ratio':>8}",
    ]
    for r in results:
        lines.append(
            f"   {r.function:<14}{r.bytecode_ms:>7.0f} ms{r.sources_ms:>7.0f} ms{r.ratio:>7.2f}x"
            f"{r.collector_on_ms:>11.0f} ms{r.paused_ratio:>7.2f}x"
        )
    lines.append("   (bytecode = the layer as built; sources = the same layer without __pycache__, as SAM's python")
    lines.append("    builder shipped it: every cold start compiled what it imported; collector on = the layer as")
    lines.append("    built, the garbage collector running through the imports: chatcore.coldstart's pause undone)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--layer", type=Path, help="a built layer's python folder (default: build one)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="layer-bytecode-") as tmp:
        work = Path(tmp)
        layer = args.layer.resolve() if args.layer else build_layer(work)
        results = measure(layer, sources_only(layer, work), args.runs)
    print(render(results, args.runs, layer, args.layer is None))
    if args.json:
        payload = [{**asdict(r), "ratio": r.ratio, "paused_ratio": r.paused_ratio} for r in results]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
