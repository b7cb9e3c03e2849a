"""A warm Lambda container for one built function, standard library only.

Run as ``python3.12 -I -S -B handler_runner.py TASK_ROOT LAYER_DIR HANDLER RESULT_FD``: ``-I -S`` leaves
``sys.path`` with the standard library alone (no site-packages, no PYTHONPATH, not this file's folder; ``-B``
writes no .pyc into the build, read-only in Lambda); this script
puts the function's build folder and its layer in front, as Lambda does with /var/task and /opt/python, imports the
handler (the init phase), then reads one JSON request a line from stdin:

* ``{"event": {...}}`` runs the handler on the event and answers ``{"response": ...}`` or ``{"error": "..."}``;
* ``{"modules": true}`` answers ``{"modules": {name: file}, "sys_path": [...]}`` for every loaded module.

Answers go one JSON line each to RESULT_FD, since the handlers log to stdout.
"""

import importlib
import json
import os
import sys
import traceback
import uuid


class LambdaContext:
    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"))
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "build-smoke"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def main() -> int:
    task_root, layer_dir, handler_name, result_fd = sys.argv[1:5]
    sys.path[:0] = [task_root, layer_dir]
    out = os.fdopen(int(result_fd), "w")

    def answer(payload: object) -> None:
        out.write(json.dumps(payload, default=str) + "\n")
        out.flush()

    module_name, attr = handler_name.rsplit(".", 1)
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except Exception:
        answer({"error": traceback.format_exc()})
        return 1
    answer({"ready": True})
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("modules"):
            modules = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items())}
            answer({"modules": {k: v for k, v in modules.items() if v}, "sys_path": sys.path})
            continue
        try:
            answer({"response": handler(request["event"], LambdaContext(function_name))})
        except Exception:
            answer({"error": traceback.format_exc()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
