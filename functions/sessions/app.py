"""SessionsFunction: session CRUD on a Lambda Function URL (payload v2.0), an ASGI app behind Mangum."""

from chatcore.coldstart import collector_paused

with collector_paused():  # see chatcore.coldstart
    from chatcore.handlers import function_url_handler
    from chatcore.web.sessions_app import default_sessions_app

handler = function_url_handler(default_sessions_app, function="SessionsFunction")
