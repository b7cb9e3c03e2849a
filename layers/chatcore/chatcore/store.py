"""The session store lives in ``chatcore.dynamo`` (the DynamoDB adapter); this name stays for its importers."""

from chatcore.dynamo.store import SessionStore, TurnGuard

__all__ = ["SessionStore", "TurnGuard"]
