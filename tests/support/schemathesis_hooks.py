"""Schemathesis hooks (SCHEMATHESIS_HOOKS): NDJSON request bodies (streaming checks, imports) go as text."""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
