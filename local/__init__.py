"""Dev-only code: the local stack and its embedded services. Never shipped in the Lambda layer."""
