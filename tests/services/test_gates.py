"""kit.Gates: holders of one key take turns, other keys do not wait, and a gate lives only while it is used."""

import asyncio
import contextlib

from app.services.kit import Gates


async def test_holders_of_one_key_take_turns_in_arrival_order():
    gates, inside, order = Gates(), 0, []

    async def hold(n: int) -> None:
        nonlocal inside
        async with gates.through("subject"):
            inside += 1
            assert inside == 1, "two holders of one key at once"
            order.append(n)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.gather(*(hold(n) for n in range(20)))
    assert order == list(range(20))
    assert len(gates) == 0


async def test_other_keys_do_not_wait():
    gates, released = Gates(), asyncio.Event()

    async def hold_a() -> None:
        async with gates.through("a"):
            await released.wait()

    holder = asyncio.create_task(hold_a())
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        async with gates.through("b"):
            assert len(gates) == 2
    released.set()
    await holder
    assert len(gates) == 0


async def test_a_holder_that_fails_or_is_cancelled_frees_the_gate():
    gates = Gates()
    with contextlib.suppress(ValueError):
        async with gates.through("k"):
            raise ValueError("boom")

    async def wait_behind() -> None:
        async with gates.through("k"):
            await asyncio.sleep(10)

    async with gates.through("k"):
        task = asyncio.create_task(wait_behind())
        await asyncio.sleep(0)
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(gates) == 0
    async with asyncio.timeout(1), gates.through("k"):
        pass
