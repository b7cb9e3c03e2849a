#!/bin/bash
# ChatFunction under the AWS Lambda Web Adapter: uvicorn serves the ASGI app on $PORT and the adapter streams
# its responses through the Function URL (AWS_LWA_INVOKE_MODE=response_stream).
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT}:${PYTHONPATH:-}"
exec python -m uvicorn --host 127.0.0.1 --port "${PORT:-8080}" --app-dir "${LAMBDA_TASK_ROOT}" \
  --no-access-log --timeout-keep-alive 60 app:asgi_app
