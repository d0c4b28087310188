"""Access-log lines carry no query strings (publishable keys) and no device ids."""

import logging

from app.logs import RedactPaths, redact


def test_redact():
    assert redact("/v1/public/cookie-consents/abcdef0123456789abcd?key=pk_x") == "/v1/public/cookie-consents/{device_id}"
    assert redact("/v1/public/banner?key=pk_secretish") == "/v1/public/banner"
    assert redact("/v1/changes?after=abc") == "/v1/changes"
    assert redact("/v1/subjects/0b7c/history") == "/v1/subjects/0b7c/history"


def test_filter_rewrites_uvicorn_access_records():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/public/cookie-consents/abcdef0123456789abcd?key=pk_1", "1.1", 200), None,
    )
    assert RedactPaths().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/public/cookie-consents/{device_id} HTTP/1.1" 200'
