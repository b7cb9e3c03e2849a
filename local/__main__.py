"""``python -m local``: run the whole stack on 127.0.0.1 (see local/stack.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import uvicorn

from local.stack import LocalStack


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local", description="Run the chat backend locally.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--aws",
        choices=["auto", "embedded", "external"],
        default="auto",
        help="embedded = moto in-process; external = AWS_ENDPOINT_URL or your AWS account",
    )
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    base = f"http://{args.host}:{args.port}"
    stack = LocalStack(aws=args.aws, public_url=base).start()
    print("Chat backend running locally", flush=True)
    for part in stack.parts:
        print(f"  {part.name:<9} {part.mode:<9} {part.detail}")
    print(f"  web chat      {base}/")
    print(f"  sessions API  {base}/sessions   (OpenAPI: {base}/sessions/openapi.json)")
    print(f"  chat API      {base}/chat   (resume: GET {base}/chat/<id>/stream; OpenAPI: {base}/chat/openapi.json)")
    print(f"  callback API  {base}/operations   (OpenAPI: {base}/operations/openapi.json)")
    user_json = '{"user_id":"me"}'
    print(f"  dev tokens    curl -s -XPOST {base}/dev/token -H 'content-type: application/json' -d '{user_json}'")
    print("Ctrl-C stops everything.", flush=True)
    server = uvicorn.Server(uvicorn.Config(stack.app, host=args.host, port=args.port, log_level="warning"))
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:
        pass
    finally:
        # A terminal's Ctrl-C reaches both `uv run` and this process (uv forwards it again): finish stopping.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("stopped.")


if __name__ == "__main__":
    main()
