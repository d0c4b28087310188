"""Streaming checks: one purpose and channel for a long list of people, answered line by line, in order.

The input is read in chunks of lines and each chunk is answered with one statement of the reader's (`chunk`),
so memory stays flat however long the list is. A bad line is answered with its error and the stream goes on.
"""

import asyncio
import csv
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import orjson
from pydantic import ValidationError

from app.errors import AppError, NotFound, Unprocessable
from app.metrics import check_decision
from app.models.common import SubjectRef
from app.services.checks.checker import Checker
from app.services.checks.decision import Decision, decide
from app.services.checks.readers import ChunkFacts, LookupKey
from app.services.purposes import Rule, storage_channel

CSV_COLUMNS = ("email", "phone", "external_id", "subject_id", "device_id")
# Lines answered per statement: large enough to amortise the round trips and the plan, small enough to stream
# in flat memory and to stay far inside the statement timeout (db_timeout) on a busy database.
CHUNK_LINES = 25_000
# The database works on two chunks at once, on the cores this process leaves it while it parses and answers; more
# would finish no sooner and bring each statement nearer the statement timeout.
STATEMENTS_AT_ONCE = 2
PARSE_SLICE = 512


@dataclass(frozen=True)
class Limits:
    max_lines: int
    max_line_bytes: int


class ChunkFailed(Exception):
    """The queries of the chunk starting at `line` failed (the cause is chained): no line from it on was answered."""

    def __init__(self, line: int) -> None:
        super().__init__(f"the chunk from line {line} failed")
        self.line = line


class _TooLong:
    """Stands for a line that went past the byte limit; the rest of it is skipped."""


TOO_LONG = _TooLong()


async def split_batches(
    body: AsyncIterator[bytes], max_line_bytes: int
) -> AsyncIterator[list[tuple[int, bytes | _TooLong]]]:
    """(line number, bytes) of every non-blank line, a list per piece of the body (the lines it completed), never
    holding more than one line past the limit. A list, not a line at a time: an async step per line would cost
    more than splitting it.

    The limit counts a line's content: its LF, or CRLF, is not part of it.
    """
    number, buffer, skipping = 0, b"", False
    async for chunk in body:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        batch: list[tuple[int, bytes | _TooLong]] = []
        for line in complete:
            number += 1
            line = line.removesuffix(b"\r")
            if skipping or len(line) > max_line_bytes:
                skipping = False
                batch.append((number, TOO_LONG))
            elif line.strip():
                batch.append((number, line))
        if batch:
            yield batch
        # One byte more than the limit may be the CR of a CRLF still to come.
        if len(buffer) > max_line_bytes + 1:
            skipping, buffer = True, b""
    line = buffer.removesuffix(b"\r")
    if skipping or len(line) > max_line_bytes:
        yield [(number + 1, TOO_LONG)]
    elif line.strip():
        yield [(number + 1, line)]


class _Parser:
    """Turns one input line into a lookup key, or raises AppError with the line's message."""

    def __init__(self, checker: Checker, tenant: str, fmt: str, column: tuple[int, str] | None) -> None:
        self.keys = checker.keys
        self.tenant = tenant
        self.fmt = fmt
        self.column = column

    def lookup(self, line: bytes) -> LookupKey:
        text = line.decode("utf-8")
        if self.fmt == "ndjson":
            try:
                ref = SubjectRef.model_validate_json(text)
            except ValidationError as exc:
                raise Unprocessable(_first_message(exc)) from None
            kind, value = ref.kind_and_value()
        else:
            assert self.column is not None, "a CSV stream is opened with its header's column"
            index, kind = self.column
            fields = csv_fields(text, index)
            value = fields[index].strip() if index < len(fields) else ""
            if not value:
                raise Unprocessable(f"missing {kind}")
        if kind == "subject_id":
            try:
                return "id", uuid.UUID(value)
            except ValueError:
                raise Unprocessable("invalid subject_id") from None
        return "hash", self.keys.lookup_hash(self.tenant, kind, value)


def csv_fields(text: str, index: int) -> list[str]:
    """The line's fields as the csv module reads them, at least up to `index` (those after may stay joined).

    A line without a quote or a CR (almost every line of a list) is the csv module's fields split at the commas,
    at a tenth of its cost; any other line goes to the module. tests/services/test_streams.py holds the two
    side by side.
    """
    if '"' not in text and "\r" not in text and len(text) <= csv.field_size_limit():
        return text.split(",", index + 1)
    try:
        return next(csv.reader([text]), [])
    except csv.Error:  # a bare CR inside the line, a field past the csv module's size limit
        raise Unprocessable("not a valid CSV line") from None


def _first_message(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _header_column(line: bytes) -> tuple[int, str]:
    """The position and type of the one identifier column a CSV header names."""
    try:
        names = [name.strip().lower() for name in next(csv.reader([line.decode("utf-8").lstrip("\ufeff")]), [])]
    except (UnicodeDecodeError, csv.Error):
        names = []
    found = [(index, name) for index, name in enumerate(names) if name in CSV_COLUMNS]
    if len(found) != 1:
        raise Unprocessable(
            f"the CSV header must name exactly one identifier column: one of {', '.join(CSV_COLUMNS)}",
            loc=["body", "header"],
        )
    return found[0]


class CheckStream:
    """One streaming check: opened (purpose, channel and CSV header checked) before the response starts."""

    def __init__(self, checker: Checker, *, tenant: str, purpose: str, channel: str | None, limits: Limits) -> None:
        self.checker = checker
        self.tenant = tenant
        self.purpose = purpose
        self.channel = channel
        self.limits = limits
        self.rule: Rule | None = None
        self.stored_channel = ""
        self.lines: AsyncIterator[list[tuple[int, bytes | _TooLong]]] | None = None
        self._fetches: set[asyncio.Task] = set()
        self._recent: deque[asyncio.Task] = deque(maxlen=STATEMENTS_AT_ONCE)
        self.parser: _Parser | None = None

    async def open(self, *, fmt: str, body: AsyncIterator[bytes]) -> None:
        """404 for an unknown purpose, 422 for a foreign channel or a CSV without an identifier column."""
        found = await self.checker.reader.many(self.tenant, set(), {self.purpose}, set())
        self.rule = found.rules.get(self.purpose)
        if self.rule is None:
            raise NotFound("purpose", self.purpose)
        self.stored_channel = storage_channel(self.rule, self.channel, loc=["query", "channel"])
        self.lines = split_batches(body, self.limits.max_line_bytes)
        # The first line is read before the response starts, whatever the format: a client that sent
        # `Expect: 100-continue` gets its 100 (on the server's first read) before the 200, and some clients
        # (Go's net/http) send no body at all after a final status.
        batch: list[tuple[int, bytes | _TooLong]] | None = []
        while batch == []:
            batch = await anext(self.lines, None)
        column = None
        if fmt == "csv":
            if batch is None or isinstance(batch[0][1], _TooLong):
                raise Unprocessable("the CSV needs a header line naming its identifier column", loc=["body", "header"])
            column = _header_column(batch[0][1])
            batch = batch[1:]
        if batch:
            self.lines = _prepend(batch, self.lines)
        self.parser = _Parser(self.checker, self.tenant, fmt, column)

    async def answers(self, *, at: datetime) -> AsyncIterator[bytes]:
        """NDJSON answers, one chunk of lines at a time.

        A limit ends the stream with `{"line": n, "error": ...}`: every line before n is answered, none from n on.
        """
        # A task reads and parses the list while this generator answers: a chunk's queries run while the next
        # chunk is parsed (CPU work), and each chunk is answered as soon as its queries return, even while the
        # client waits before sending more. The queue holds at most two chunks: memory stays flat.
        queue: asyncio.Queue = asyncio.Queue(maxsize=2)
        reader = asyncio.ensure_future(self._read(queue))
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, dict):
                    # Headers are sent: a limit can only be told in the stream.
                    yield _line(item)
                    continue
                chunk, fetched = item
                try:
                    found = await fetched
                except Exception as exc:
                    raise ChunkFailed(chunk[0][0]) from exc
                yield self._render(chunk, found, at)
        finally:
            # The client went away or the stream failed: stop reading, and leave no query running for nobody.
            reader.cancel()
            for fetched in list(self._fetches):
                fetched.cancel()

    async def _read(self, queue: asyncio.Queue) -> None:
        """Put (chunk, its queries) on `queue` in input order, then a limit's error line if one was hit, then None.

        A limit ends the stream with `{"line": n, "error": ...}`: every line before n is answered, none from n on.
        """
        try:
            raw: list[tuple[int, bytes | _TooLong]] = []
            count = last = 0
            stop: dict | None = None
            assert self.lines is not None, "read after open"
            batches = aiter(self.lines)
            while stop is None:
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    break
                except AppError as exc:
                    # The body went past its byte cap: the whole lines read before it are still answered.
                    stop = {"line": last + 1, "error": exc.detail}
                    break
                for number, line in batch:
                    count += 1
                    if count > self.limits.max_lines:
                        stop = {"line": number, "error": f"too many lines: at most {self.limits.max_lines} per stream"}
                        break
                    last = number
                    raw.append((number, line))
                    if len(raw) >= CHUNK_LINES:
                        await self._queue_chunk(queue, raw)
                        raw = []
            if raw:
                await self._queue_chunk(queue, raw)
            if stop is not None:
                await queue.put(stop)
            await queue.put(None)
        except Exception as exc:
            await queue.put(exc)

    async def _queue_chunk(self, queue: asyncio.Queue, raw: list[tuple[int, bytes | _TooLong]]) -> None:
        # Parsing (email and phone normalisation, blind indexes) is CPU work, about 10 us a line: done in slices
        # that hand the event loop back between them, so other requests wait at most a few ms. (A thread would
        # cost more in GIL hand-overs than the parsing itself.)
        chunk = []
        for start in range(0, len(raw), PARSE_SLICE):
            chunk += [(number, self._lookup(line)) for number, line in raw[start : start + PARSE_SLICE]]
            await asyncio.sleep(0)
        after = self._recent[0] if len(self._recent) == STATEMENTS_AT_ONCE else None
        fetched = asyncio.ensure_future(self._fetch(chunk, after=after))
        self._recent.append(fetched)
        self._fetches.add(fetched)
        fetched.add_done_callback(self._fetches.discard)
        await queue.put((chunk, fetched))

    def _lookup(self, line: bytes | _TooLong) -> LookupKey | str:
        if isinstance(line, _TooLong):
            return f"line longer than {self.limits.max_line_bytes} bytes"
        assert self.parser is not None, "looked up after open"
        try:
            return self.parser.lookup(line)
        except UnicodeDecodeError:
            return "not UTF-8"
        except AppError as exc:
            return exc.detail

    async def _fetch(self, chunk: list[tuple[int, LookupKey | str]], *, after: asyncio.Task | None) -> ChunkFacts:
        lookups = [item for _, item in chunk if isinstance(item, tuple)]
        if after is not None:
            # At most STATEMENTS_AT_ONCE chunks' statements at a time (its failure is its own chunk's).
            await asyncio.wait([after])
        return await self.checker.reader.chunk(self.tenant, lookups, self.purpose, self.stored_channel)

    def _render(self, chunk: list[tuple[int, LookupKey | str]], found: ChunkFacts, at: datetime) -> bytes:
        rule = found.rule
        decided: Counter[Decision] = Counter()
        facts = iter(found.facts)
        out = []
        for number, item in chunk:
            if isinstance(item, str):
                out.append(_line({"line": number, "error": item}).decode())
                continue
            if rule is None:  # the purpose went away mid-stream
                raise NotFound("purpose", self.purpose)
            subject_id, flags, standing, suppressed = next(facts)
            one = decide(
                rule, subject_known=subject_id is not None, flags=flags, standing=standing, at=at, suppressed=suppressed
            )
            decided[one] += 1
            # The line orjson would write for {"line", "allowed", "reason", "subject_id"}, written by hand: a
            # dict and a dumps per line cost more than the rest of the answer.
            known = "null" if subject_id is None else f'"{subject_id}"'
            out.append(f'{{"line":{number},{_decided_json(one)},"subject_id":{known}}}\n')
        for (allowed, reason), times in decided.items():
            check_decision(reason, allowed).inc(times)
        return "".join(out).encode()


@lru_cache(maxsize=64)
def _decided_json(decided: Decision) -> str:
    """`"allowed":...,"reason":...` as orjson writes them."""
    return orjson.dumps({"allowed": decided.allowed, "reason": decided.reason}).decode()[1:-1]


async def _prepend(
    first: list[tuple[int, bytes | _TooLong]], rest: AsyncIterator[list[tuple[int, bytes | _TooLong]]]
) -> AsyncIterator[list[tuple[int, bytes | _TooLong]]]:
    """`first`, then `rest`."""
    yield first
    async for item in rest:
        yield item


def _line(payload: dict) -> bytes:
    return orjson.dumps(payload, default=str, option=orjson.OPT_APPEND_NEWLINE)
