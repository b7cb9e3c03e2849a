"""ChatFunction: one chat turn per request, streamed as an AI SDK UI message stream.

One ASGI app, two entry points:

* ``asgi_app``: served by uvicorn (``run.sh``) behind the AWS Lambda Web Adapter with
  ``AWS_LWA_INVOKE_MODE=response_stream``, so the Function URL (``InvokeMode: RESPONSE_STREAM``) streams tokens.
* ``handler``: the same app behind Mangum, buffered, for ``sam local invoke -e events/chat-*.json`` and plain
  invokes (ChatBufferedFunction); it returns the whole SSE body.
"""

from chatcore.coldstart import collector_paused

with collector_paused():  # see chatcore.coldstart
    from chatcore.handlers import function_asgi_app, function_url_handler
    from chatcore.web.chat_app import default_chat_app, lazy

asgi_app = function_asgi_app(lazy(default_chat_app), function="ChatFunction")
handler = function_url_handler(default_chat_app, function="ChatBufferedFunction")
