"""The answer spool of streaming responses: order kept across memory and the temporary file, nothing lost."""

import asyncio
import random

from app.responses import Spool


async def test_spool_keeps_order_across_memory_and_file():
    rng = random.Random(5)
    spool = Spool(memory=64)
    written: list[bytes] = []
    read: list[bytes] = []

    async def reader() -> None:
        async for chunk in spool.chunks():
            read.append(chunk)
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    task = asyncio.ensure_future(reader())
    for n in range(2_000):
        chunk = f"{n}:{'x' * rng.randrange(0, 40)}\n".encode()
        written.append(chunk)
        spool.write(chunk)
        if rng.random() < 0.2:
            await asyncio.sleep(0)  # the reader catches up now and then: memory, file, and memory again
    spool.close()
    await asyncio.wait_for(task, 5)
    assert b"".join(read) == b"".join(written)
    assert spool.file is None  # the temporary file is gone once read


async def test_a_reader_that_stops_early_leaves_no_file():
    spool = Spool(memory=8)
    for n in range(100):
        spool.write(b"%d\n" % n)
    chunks = spool.chunks()
    assert await anext(chunks) == b"0\n"
    await chunks.aclose()
    assert spool.file is None
