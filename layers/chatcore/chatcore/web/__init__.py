"""ASGI apps of the HTTP functions (Starlette), shared by Lambda handlers and the local stack."""
