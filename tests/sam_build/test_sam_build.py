"""The built artifacts are what runs: ``sam build`` (the pinned SAM CLI, no container) builds template.yaml for
arm64 as written and for x86_64, and these tests check what it produced:

* every wheel in the built layer was resolved for the target architecture, and every native library (ELF file)
  is for that machine: no host (x86_64) binary slipped into the arm64 layer;
* the layer plus each function stays inside Lambda's 250 MB unzipped budget;
* each built function, with only its build folder and the built layer on ``sys.path`` (no site-packages), runs
  every sample event in events/ against moto, a real redis-server and the offline LLM on loopback;
* the streaming function's built ``run.sh`` starts uvicorn and answers the Lambda Web Adapter's readiness check.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.e2e.test_local_invoke import EVENTS, FUNCTION_OF_PREFIX, STATUS, STEP_RESULTS
from tests.sam_build.conftest import ARCHITECTURES, REPORT, RUNNER, BuiltFunction, reset_state
from tests.sam_build.sam import (
    ADAPTER_LAYER_ALLOWANCE,
    ELF_MACHINE,
    LAMBDA_MARKERS,
    LAYER_ID,
    ROOT,
    UNZIPPED_BUDGET,
    Build,
    Services,
    elf_files,
    functions,
    lambda_environment,
    mb,
    template_architecture,
    tree_size,
    wheel_tag_problem,
    wheel_tags,
)
from tests.support.redis_server import free_port
from tests.support.sse import parse_sse

pytestmark = pytest.mark.sam_build

HANDLER_FUNCTIONS = sorted(i for i, p in functions().items() if p["Handler"].endswith(".handler"))
STREAMING_FUNCTION = "ChatFunction"  # Handler: run.sh, behind the Lambda Web Adapter


def _layer_requirements(arch: str) -> dict[str, str]:
    """Normalised name -> pinned version of every layer requirement that applies on Lambda for ``arch``."""
    pins: dict[str, str] = {}
    for line in (ROOT / "layers" / "chatcore" / "requirements.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(LAMBDA_MARKERS[arch]):
            continue
        (spec,) = req.specifier
        pins[canonicalize_name(req.name)] = spec.version
    return pins


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_layer_wheel_was_resolved_for_the_architecture(arch: str, sam_builds: dict[str, Build]):
    layer = sam_builds[arch].layer_python
    tags = wheel_tags(layer)
    wrong = {}
    for dist, dist_tags in tags.items():
        problems = {tag: wheel_tag_problem(tag, arch) for tag in dist_tags}
        # a wheel loads when one of its tags fits; a tag for another machine means the wrong file was picked
        foreign = [t for t, why in problems.items() if why and why.startswith("machine")]
        if not dist_tags or foreign or all(problems.values()):
            wrong[dist] = problems
    assert not wrong, f"wheels that do not fit Lambda python3.12 on {arch}: {wrong}"
    installed = {canonicalize_name(d.removesuffix(".dist-info").rsplit("-", 1)[0]): d for d in tags}
    versions = {name: d.removesuffix(".dist-info").rsplit("-", 1)[1] for name, d in installed.items()}
    assert versions == _layer_requirements(arch), "the built layer differs from layers/chatcore/requirements.txt"
    assert any(not t.endswith("-any") for ts in tags.values() for t in ts), "no platform wheel at all: wrong layer?"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_native_library_is_for_the_architecture(arch: str, sam_builds: dict[str, Build]):
    build = sam_builds[arch]
    elves = elf_files(build.dir)
    wrong = {str(p.relative_to(build.dir)): machine for p, machine in elves.items() if machine != ELF_MACHINE[arch]}
    assert not wrong, f"ELF files that are not {arch} (e_machine {ELF_MACHINE[arch]}): {wrong}"
    not_elf = [p for p in build.dir.rglob("*.so") if p not in elves]
    assert not not_elf, f"*.so files that are not ELF: {not_elf}"
    assert any(p.name.startswith("_pydantic_core") for p in elves), sorted(elves)


def _pyc_flags(pyc: Path) -> int:
    """The PEP 552 flags word of a .pyc header: bit 0 hash-based, bit 1 check the source."""
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_layer_module_ships_as_bytecode_lambda_can_use(arch: str, sam_builds: dict[str, Build]):
    """/opt is read-only: a module without usable bytecode is compiled by every cold start. Timestamp-based
    bytecode would not do either (the zip's times are not the ones it records), so each is hash-based and
    unchecked, for this interpreter's version (Lambda's: python3.12)."""
    layer = sam_builds[arch].layer_python
    sources = sorted(layer.rglob("*.py"))
    assert len(sources) > 1000, len(sources)
    tag = sys.implementation.cache_tag
    missing = [
        str(p.relative_to(layer)) for p in sources if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").exists()
    ]
    assert not missing, f"{len(missing)} modules without {tag} bytecode, e.g. {missing[:5]}"
    flags = {_pyc_flags(pyc) for pyc in layer.rglob(f"*.{tag}.pyc")}
    assert flags == {0b01}, f"bytecode flags {flags}: want hash-based (1) and unchecked (not 2), as PEP 552 has it"


def test_the_built_layer_imports_from_its_bytecode_alone(host_build: Build, tmp_path: Path):
    """What the handlers import at init runs from the shipped bytecode: in a copy of the built layer whose every
    source file raises when executed, the chat and sessions apps' imports still succeed."""
    layer = tmp_path / "python"
    shutil.copytree(host_build.layer_python, layer, symlinks=True)
    for source in layer.rglob("*.py"):
        source.write_text("raise ImportError('compiled from source: ' + __name__)\n")
    imports = "import botocore.session, openai, pydantic, redis.asyncio, starlette; import chatcore.web.chat_app, chatcore.web.sessions_app"
    done = subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-S", "-B", "-c", imports],
        env={"PYTHONPATH": str(layer), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_functions_and_layers_fit_lambdas_unzipped_budget(sam_builds: dict[str, Build]):
    build = sam_builds[template_architecture()]
    layer = tree_size(build.dir / LAYER_ID)
    largest = 0
    for logical_id, props in functions().items():
        external_layers = [ref for ref in props.get("Layers", []) if not (isinstance(ref, dict) and "Ref" in ref)]
        total = layer + tree_size(build.function_dir(logical_id)) + ADAPTER_LAYER_ALLOWANCE * len(external_layers)
        assert total <= UNZIPPED_BUDGET, f"{logical_id}: {mb(total)} unzipped, over Lambda's {mb(UNZIPPED_BUDGET)}"
        largest = max(largest, total)
    line = (
        f"{LAYER_ID} ({build.arch}) unzipped: {mb(layer)}; largest function with its layers "
        f"{mb(largest)} of Lambda's {mb(UNZIPPED_BUDGET)} (external layers counted as {mb(ADAPTER_LAYER_ALLOWANCE)})"
    )
    REPORT.append(line)
    print(line)


@pytest.mark.parametrize("event_file", EVENTS, ids=lambda p: p.stem)
def test_sample_event_through_the_built_handler(
    event_file: Path, built_functions: dict[str, BuiltFunction], services: Services
):
    name = event_file.stem
    function = built_functions[FUNCTION_OF_PREFIX[name.split("-")[0]]]
    reset_state(services)
    response = function.invoke(json.loads(event_file.read_text()))
    if name in STEP_RESULTS:
        assert STEP_RESULTS[name].items() <= response.items(), response
        return
    assert response["statusCode"] == STATUS[name], response.get("body")
    if response["headers"].get("content-type", "").startswith("text/event-stream"):
        stream = parse_sse(response["body"])
        assert stream.done and stream.types[-1] == "finish" and not stream.of_type("error"), response["body"]


@pytest.mark.parametrize("logical_id", HANDLER_FUNCTIONS)
def test_built_handler_imports_only_from_the_build(
    logical_id: str, built_functions: dict[str, BuiltFunction], host_build: Build
):
    answer = built_functions[logical_id].request({"modules": True})
    runner = RUNNER.resolve()
    modules = {name: Path(file).resolve() for name, file in answer["modules"].items()}
    modules = {name: file for name, file in modules.items() if file != runner}  # __main__ (and its aliases)
    assert modules["chatcore"].is_relative_to(host_build.layer_python)
    # botocore is shipped in the layer, not the runtime's; boto3 (which the runtime has) is not used at all.
    assert modules["botocore"].is_relative_to(host_build.layer_python)
    assert "boto3" not in modules
    assert modules["app"].is_relative_to(host_build.function_dir(logical_id))
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    build_dir = host_build.dir.resolve()
    outside = {n: str(f) for n, f in modules.items() if not (f.is_relative_to(build_dir) or f.is_relative_to(stdlib))}
    assert not outside, f"modules loaded from outside the build: {outside}"
    assert not [p for p in answer["sys_path"] if "site-packages" in p], answer["sys_path"]


def test_the_built_run_sh_serves_the_readiness_check_and_streams(host_build: Build, services: Services, tmp_path: Path):
    """The Lambda Web Adapter execs the handler script and waits for its readiness path before the first
    request: the built script, the built app and the built layer must get there on their own. Then one sample
    chat turn goes through it, as the adapter would forward the Function URL request."""
    task_root = host_build.function_dir(STREAMING_FUNCTION)
    script = task_root / functions()[STREAMING_FUNCTION]["Handler"]
    assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable: the adapter could not exec it"
    env = lambda_environment(STREAMING_FUNCTION, task_root, services)
    readiness = env["AWS_LWA_READINESS_CHECK_PATH"]
    # Lambda's `python` is the runtime's interpreter; here the plain interpreter without any site-packages, so
    # the layer (PYTHONPATH, as /opt/python is in Lambda) is the only place packages can come from; nothing is
    # written into the build (Lambda's /var/task and /opt are read-only).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{getattr(sys, "_base_executable", sys.executable)}" -S -B "$@"\n')
    python.chmod(0o755)
    port = free_port()
    env |= {"PORT": str(port), "PATH": f"{bin_dir}:{env['PATH']}", "PYTHONPATH": str(host_build.layer_python)}
    reset_state(services)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(script)], cwd=task_root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        status = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}{readiness}", timeout=2).status_code
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert status == 200, f"{readiness} answered {status}; exit code {proc.poll()}; log:\n{log.read_text()}"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert str(host_build.layer_python / "pydantic_core") in maps, "the app did not load the built layer"

        event = json.loads((ROOT / "events" / "chat-send.json").read_text())
        response = httpx.request(
            event["requestContext"]["http"]["method"],
            f"http://127.0.0.1:{port}{event['rawPath']}",
            headers={k: v for k, v in event["headers"].items() if k in ("authorization", "content-type")},
            content=event["body"],
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = parse_sse(response.text)
        assert stream.done and stream.types[-1] == "finish" and not stream.of_type("error"), response.text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
