"""Schemathesis hooks for vodfarm: tus bodies are raw bytes."""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
