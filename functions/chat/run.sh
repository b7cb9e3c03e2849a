#!/bin/bash
# ChatFunction under the AWS Lambda Web Adapter: uvicorn serves the ASGI app on 127.0.0.1:$PORT and the adapter
# streams its responses through the Function URL (AWS_LWA_INVOKE_MODE=response_stream). chatcore.web.serve starts
# uvicorn without its command line (click), a cold-start saving; the options it would parse are fixed there.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT}:${PYTHONPATH:-}"
exec python -m chatcore.web.serve --port "${PORT:-8080}" app:asgi_app
