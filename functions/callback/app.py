"""CallbackFunction: external services report an async tool's completion (HMAC-signed) on a Function URL."""

from chatcore.coldstart import collector_paused

with collector_paused():  # see chatcore.coldstart
    from chatcore.handlers import function_url_handler
    from chatcore.web.callback_app import default_callback_app

handler = function_url_handler(default_callback_app, function="CallbackFunction")
