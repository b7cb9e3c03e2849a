"""Cold-start discipline: what the handlers pull in, and the chatcore error boundary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after_import(path: str) -> set[str]:
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {path!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_sessions_handler_does_not_import_the_llm_client():
    modules = _modules_after_import(str(ROOT / "functions/sessions/app.py"))
    assert not {m for m in modules if m == "openai" or m.startswith("openai.")}
    assert "moto" not in modules and "local" not in modules


def test_third_party_clients_are_imported_only_by_their_adapters():
    package = ROOT / "layers/chatcore/chatcore"
    allowed = {
        # chatcore.aws.call is the one place botocore errors are translated; chatcore.dynamo and
        # chatcore.operations make their requests through it.
        "boto3": {"aws.py"},
        "botocore": {"aws.py"},
        "redis": {"cache.py", "replay.py"},
        "jwt": {"auth.py"},
        "openai": {"llm.py"},
    }
    for source in package.rglob("*.py"):
        text = source.read_text()
        for lib, owners in allowed.items():
            imports = f"import {lib}" in text or f"from {lib}" in text
            if imports:
                assert source.relative_to(package).as_posix() in owners, f"{source.relative_to(ROOT)} imports {lib}"


def test_os_environ_only_in_config():
    for source in (ROOT / "layers/chatcore/chatcore").rglob("*.py"):
        if source.name != "config.py":
            assert "os.environ" not in source.read_text(), source
