"""Access-log redaction: paths are logged without query strings or device ids."""

import logging
import re

# A device id is what lets a browser read its own cookie choices: it stays out of logs, as identifiers do.
_DEVICE_PATH = re.compile(r"^(/v1/public/cookie-consents/)[^/?]+")


def redact(path: str) -> str:
    """The path without its query (publishable keys, cursors) and with any device id replaced."""
    return _DEVICE_PATH.sub(r"\1{device_id}", path.split("?", 1)[0])


class RedactPaths(logging.Filter):
    """For uvicorn's access log, whose record args are (client, method, path, http_version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            record.args = (client, method, redact(str(path)), version, status)
        return True


def install() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactPaths) for f in access.filters):
        access.addFilter(RedactPaths())
