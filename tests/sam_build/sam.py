"""``sam build`` for the build smoke tests: the pinned SAM CLI (tools/sam), an architecture-retargeted copy of
template.yaml, and what the tests read from the output (ELF headers, wheel tags, sizes, the handlers' environment).

The builds go to a per-worktree directory under ``~/.cache/sam-build`` with ``--cached``, so a second local run
reuses the downloaded wheels when nothing changed; with ``CI=true`` (or ``SAM_BUILD_CLEAN=1``) every build
starts from an empty temporary directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from local.template import TEMPLATE, load_template
from tests.support.template_eval import Deployment

ROOT = Path(__file__).resolve().parents[2]
SAM_PROJECT = ROOT / "tools" / "sam"
SAM_BIN = SAM_PROJECT / ".venv" / "bin"
# This machine's architecture in the template's terms: the build whose handlers run here.
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
LAYER_ID = "ChatCoreLayer"
# Lambda's limit for a function's code plus all of its layers, unzipped: 250 MB (MiB in the quotas table).
UNZIPPED_BUDGET = 250 * 1024 * 1024
# ChatFunction also carries the Lambda Web Adapter's layer (a Rust extension binary), which sam build does not
# fetch; leave it this much of the budget.
ADAPTER_LAYER_ALLOWANCE = 20 * 1024 * 1024

ADAPTER_LAYER_NAME = {"arm64": "LambdaAdapterLayerArm64", "x86_64": "LambdaAdapterLayerX86"}
# ELF e_machine values (elf.h)
EM_X86_64 = 62
EM_AARCH64 = 183
ELF_MACHINE = {"arm64": EM_AARCH64, "x86_64": EM_X86_64}
WHEEL_MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}
# The python3.12 runtime is Amazon Linux 2023: glibc 2.34 (aws-lambda-builders' _RUNTIME_GLIBC says the same)
LAMBDA_GLIBC = (2, 34)
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
# PEP 508 marker environment of the Lambda python3.12 runtime, per architecture
LAMBDA_MARKERS = {
    arch: {
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_machine": machine,
        "python_version": "3.12",
        "python_full_version": "3.12.0",
    }
    for arch, machine in (("arm64", "aarch64"), ("x86_64", "x86_64"))
}


class SamMissing(RuntimeError):
    pass


def sam_executable() -> Path:
    sam = SAM_BIN / "sam"
    if not sam.exists():
        raise SamMissing(
            f"{sam} is missing: the build tests need the pinned AWS SAM CLI. Install it with "
            "`UV_PYTHON_DOWNLOADS=never uv sync --frozen --project tools/sam` (./run test and .ci/run do this)."
        )
    return sam


@dataclass
class Build:
    arch: str
    dir: Path  # sam's --build-dir: one folder per function and layer
    seconds: float
    cached: bool
    log: str = field(repr=False, default="")

    @property
    def layer_python(self) -> Path:
        """The layer's content as it lands in /opt: python/ holds the packages (Lambda puts /opt/python on
        sys.path)."""
        return self.dir / LAYER_ID / "python"

    def function_dir(self, logical_id: str) -> Path:
        return self.dir / logical_id


def retarget_template(text: str, arch: str) -> str:
    """template.yaml with every architecture setting (Globals and functions' ``Architectures``, the layer's
    ``CompatibleArchitectures`` and ``Metadata.BuildArchitecture``) set to ``arch``. Edits the YAML node tree, so
    the CloudFormation tags (!Ref, !Sub, ...) and everything else stay as written."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    changed: list[str] = []

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{path}.{key.value}"
                if key.value in ("Architectures", "CompatibleArchitectures") and isinstance(value, yaml.SequenceNode):
                    value.value = [yaml.ScalarNode("tag:yaml.org,2002:str", arch)]
                    changed.append(name)
                elif key.value == "BuildArchitecture" and isinstance(value, yaml.ScalarNode):
                    value.value = arch
                    changed.append(name)
                else:
                    walk(value, name)
        elif isinstance(node, yaml.ScalarNode) and "LambdaAdapterLayer" in str(node.value):
            # the Lambda Web Adapter publishes one layer per architecture
            node.value = re.sub(r"LambdaAdapterLayer(Arm64|X86)", ADAPTER_LAYER_NAME[arch], str(node.value))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, path)

    walk(root, "")
    needed = {".Globals.Function.Architectures", f".Resources.{LAYER_ID}.Properties.CompatibleArchitectures"}
    needed.add(f".Resources.{LAYER_ID}.Metadata.BuildArchitecture")
    missing = needed - set(changed)
    if missing:
        raise AssertionError(f"template.yaml no longer has {sorted(missing)}: update tests/sam_build/sam.py")
    return yaml.serialize(root)


def _cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam-build"
    # one cache per worktree: the built template records absolute source paths
    return base / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]


def clean_builds() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("SAM_BUILD_CLEAN") == "1"


@contextlib.contextmanager
def build_area() -> Iterator[tuple[Path, bool]]:
    """Where this session builds, and whether ``--cached`` applies. The cached area is locked for the session:
    a second test run in the same worktree waits rather than rebuilding the folders under the first."""
    if clean_builds():
        with tempfile.TemporaryDirectory(prefix="sam-build-") as tmp:
            yield Path(tmp), False
        return
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield root, True


def start_build(area: Path, arch: str, cached: bool) -> tuple[subprocess.Popen[str], float, Path]:
    """Start ``sam build`` for ``arch`` (the template as is for arm64, a retargeted copy otherwise)."""
    work = area / arch
    if work.exists() and not cached:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    template = TEMPLATE
    if arch != template_architecture():
        template = work / "template.yaml"
        template.write_text(retarget_template(TEMPLATE.read_text(), arch))
    build_dir = work / "build"  # sam keeps its build graph (build.toml) beside it
    cmd = [
        str(sam_executable()),
        "build",
        "--template",
        str(template),
        "--base-dir",
        str(ROOT),  # CodeUri/ContentUri resolve against the repo, wherever the template copy is
        "--build-dir",
        str(build_dir),
    ]
    if cached:
        cmd += ["--cached", "--cache-dir", str(work / "cache")]
    env = {
        **os.environ,
        # aws-lambda-builders runs `python3.12 -m pip`: the tool's venv (pinned pip) comes first on PATH
        "PATH": f"{SAM_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # the layer's Makefile installs wheels for this architecture (the template's by default)
        "LAYER_ARCH": arch,
        "SAM_CLI_TELEMETRY": "0",
        "SAM_CLI_DISABLE_UPDATE_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    # cwd: sam keeps --cached layer dependencies in ./.aws-sam/deps
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
    )
    return proc, time.monotonic(), build_dir


def finish_build(arch: str, cached: bool, proc: subprocess.Popen[str], started: float, build_dir: Path) -> Build:
    log, _ = proc.communicate(timeout=900)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise AssertionError(f"sam build ({arch}) failed with exit code {proc.returncode}:\n{log[-6000:]}")
    return Build(arch=arch, dir=build_dir, seconds=seconds, cached=cached, log=log)


def template_architecture() -> str:
    archs: list[str] = load_template()["Globals"]["Function"]["Architectures"]
    assert len(archs) == 1, archs
    return archs[0]


def functions() -> dict[str, dict[str, Any]]:
    """Logical id -> properties of every AWS::Serverless::Function in template.yaml."""
    return {
        logical_id: res["Properties"]
        for logical_id, res in load_template()["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    }


# ---------------------------------------------------------------- what the tests read from a build


def elf_machine(path: Path) -> int | None:
    """e_machine of an ELF file, None for anything else."""
    with path.open("rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "<" if header[5] == 1 else ">"  # EI_DATA: 1 = little-endian
    machine: int = struct.unpack_from(f"{order}H", header, 18)[0]
    return machine


def elf_files(tree: Path) -> dict[Path, int]:
    """Every ELF file under ``tree`` (extension modules and the shared libraries wheels vendor) -> e_machine."""
    found = {}
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink():
            machine = elf_machine(path)
            if machine is not None:
                found[path] = machine
    return found


def wheel_tags(site: Path) -> dict[str, list[str]]:
    """dist-info folder -> the ``Tag:`` lines of its WHEEL file (how the installed wheel was tagged)."""
    tags = {}
    for wheel in sorted(site.glob("*.dist-info/WHEEL")):
        lines = wheel.read_text().splitlines()
        tags[wheel.parent.name] = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")]
    return tags


def wheel_tag_problem(tag: str, arch: str) -> str | None:
    """Why a wheel tag (``py-abi-platform``) cannot load on Lambda python3.12 for ``arch``; None when it can.
    A ``linux_*`` platform means a wheel compiled on the build machine from an sdist: refused too."""
    python, abi, platform = tag.split("-")
    if not (python in ("py3", "py2") or (python.startswith("cp3") and int(python[3:]) <= 12)):
        return f"python tag {python}"
    if abi not in ("none", "abi3", "cp312"):
        return f"ABI {abi}"
    if platform == "any":
        return None
    match = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014|manylinux_(\d+)_(\d+))_(\w+)", platform)
    if match is None:
        return f"platform {platform} (not a manylinux wheel; linux_* ones are built on this machine from an sdist)"
    legacy, major, minor, machine = match.groups()
    if machine != WHEEL_MACHINE[arch]:
        return f"machine {machine}"
    glibc = _LEGACY_MANYLINUX[legacy] if major is None else (int(major), int(minor))
    if glibc > LAMBDA_GLIBC:
        return f"needs glibc {glibc[0]}.{glibc[1]}, Lambda has {LAMBDA_GLIBC[0]}.{LAMBDA_GLIBC[1]}"
    return None


def tree_size(path: Path) -> int:
    """Unzipped size: the bytes of every file (what Lambda counts), not disk blocks."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


# ---------------------------------------------------------------- the environment of a built handler


@dataclass
class Services:
    """The stack's resources, here on loopback (moto, redis-server, the offline LLM), and the template evaluated
    against them (``deployment``: its secrets stored in moto with the values the sample events are signed with)."""

    aws_endpoint: str
    table: str
    redis_url: str
    llm_base_url: str
    deployment: Deployment


def lambda_environment(logical_id: str, task_root: Path, services: Services) -> dict[str, str]:
    """Everything a built handler gets in its environment, in one place: what the Lambda runtime sets, the
    template's environment for the function (every intrinsic resolved; secrets as ARNs, read at init from moto),
    and the loopback stand-ins for what the template points elsewhere (the cache, the LLM)."""
    return {
        # the Lambda runtime
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(functions()[logical_id].get("MemorySize", 1024)),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        # the template, as the deployment would set it (no sample event starts an execution)
        **services.deployment.environment(logical_id),
        # loopback stand-ins: the cache the template would create, the LLM it would call
        "AWS_ENDPOINT_URL": services.aws_endpoint,
        "REDIS_URL": services.redis_url,
        "LLM_BASE_URL": services.llm_base_url,
        "LLM_API_KEY": "offline",
        "LLM_MODEL": "offline-chat",
        "LLM_TITLE_MODEL": "",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
