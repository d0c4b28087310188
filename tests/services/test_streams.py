"""`split_batches`: physical line numbers, blank lines skipped, long lines cut short, wherever the chunks break."""

import csv
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.errors import Unprocessable
from app.services.checks.streams import TOO_LONG, csv_fields, split_batches

LIMIT = 16


async def chunked(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    """`data` in pieces of these sizes (the last piece takes the rest); empty pieces included, as ASGI allows."""
    start = 0
    for size in sizes:
        yield data[start : start + size]
        start += size
    yield data[start:]


def expected(data: bytes, limit: int = LIMIT) -> list[tuple[int, object]]:
    """The lines split_batches must yield, computed from the whole body at once."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # a final newline ends the last line; it does not start another
    out: list[tuple[int, object]] = []
    for number, piece in enumerate(pieces, start=1):
        line = piece.removesuffix(b"\r")
        if len(line) > limit:
            out.append((number, TOO_LONG))
        elif line.strip():
            out.append((number, line))
    return out


async def split(data: bytes, sizes: list[int], limit: int = LIMIT) -> list[tuple[int, object]]:
    return [item async for batch in split_batches(chunked(data, sizes), limit) for item in batch]


def every_split(data: bytes) -> list[list[int]]:
    """Every way to cut `data` in two, and one byte at a time."""
    return [[cut] for cut in range(len(data) + 1)] + [[1] * len(data)]


SAMPLES = [
    b"a@example.com\nb@example.com\n",
    b"a@example.com\nb@example.com",  # no final newline
    b"a\r\nb\r\n\r\nc\r\n",  # CRLF, a blank CRLF line
    b"\n\n  \n\t\nx\n\n",  # blank and whitespace-only lines keep their numbers
    b"short\n" + b"y" * 40 + b"\nafter\n",  # a long line in the middle
    b"y" * 40,  # only a long line, no newline
    b"y" * 40 + b"\n",
    b"first\n" + b"z" * 40,  # a long last line without newline
    b"x" * LIMIT + b"\n" + b"x" * (LIMIT + 1) + b"\n",  # exactly at the limit, one past it
    b"x" * LIMIT + b"\r\n" + b"w" * LIMIT + b"\r",  # at the limit with CRLF; a CR before end of input
    b"\xff\xfe\n{\"email\": \"a@b.c\"}\n",  # bytes are passed on undecoded
    b"",
    b"\n",
]


@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
async def test_any_chunk_boundary_gives_the_same_lines(data: bytes):
    want = expected(data)
    for sizes in every_split(data):
        assert await split(data, sizes) == want, sizes


async def test_random_bodies_and_random_chunks():
    rng = random.Random(20261122)
    alphabet = [b"a", b"b", b" ", b"\r", b"\n", b"\r\n", b"\n\n", b"," * 7, b"q" * 9]
    for _ in range(300):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        sizes = [rng.randint(0, 12) for _ in range(rng.randint(0, 10))]
        assert await split(data, sizes) == expected(data), (data, sizes)


async def test_numbers_and_content():
    data = b"email\r\n\r\nann@example.com\r\n   \nbob@example.com"
    assert await split(data, [3, 5, 100], limit=100) == [
        (1, b"email"), (3, b"ann@example.com"), (5, b"bob@example.com"),
    ]


async def test_a_long_line_is_one_error_and_the_next_line_keeps_its_number():
    data = b"ok\n" + b"L" * 1_000 + b"\nnext\n"
    # The long line arrives in many pieces: it is reported once, at its own number.
    assert await split(data, [5] * 300) == [(1, b"ok"), (2, TOO_LONG), (3, b"next")]


async def test_long_line_is_not_held_in_memory():
    """The buffer is dropped once a line is known to be too long: a 10 MB line costs no more than one chunk."""
    held: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(160):
            yield b"m" * 65_536
            # split_batches is waiting for the next chunk: what does it hold?
            held.append(len(batches.ag_frame.f_locals["buffer"]))
        yield b"\nafter\n"

    batches = split_batches(body(), 4_096)
    assert [item async for batch in batches for item in batch] == [(1, TOO_LONG), (2, b"after")]
    assert len(held) == 160 and max(held) <= 4_097


async def test_line_exactly_at_the_limit_with_crlf_is_not_too_long():
    """The limit counts a line's content, not its terminator: CRLF files are not penalised."""
    data = b"x" * LIMIT + b"\r\n"
    assert await split(data, [LIMIT + 1]) == [(1, b"x" * LIMIT)]
    assert await split(data, [LIMIT]) == [(1, b"x" * LIMIT)]


def _column(read, text: str, index: int) -> str | None:
    """The value a stream takes from column `index` of a line ("" when missing), None for a line refused."""
    try:
        fields = read(text, index)
    except (Unprocessable, csv.Error):
        return None
    return fields[index].strip() if index < len(fields) else ""


def _csv_module(text: str, index: int) -> list[str]:
    return next(csv.reader([text]), [])


@given(st.text(alphabet=st.sampled_from(list('ab ,"\r\t\x00\u00e9\u2028\x0b\x0c\x1c')), max_size=30), st.integers(0, 4))
@example('a,"b,c",d', 1)
@example("a,b\rc", 0)
@example('a,b"c,d', 2)
def test_csv_fields_read_as_the_csv_module(text: str, index: int):
    """The split without the csv module takes each column's value exactly as the module reads it."""
    assert _column(csv_fields, text, index) == _column(_csv_module, text, index)
