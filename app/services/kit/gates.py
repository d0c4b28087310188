"""Gates: one asyncio lock per key, alive only while someone holds or waits for it.

A worker's writers of one subject queue here instead of racing each other to the database, where all but one
would lose and write again under the row lock. The database still decides: a gate only spares the lost attempts
of writers in the same process (another worker or replica is stopped by the statement itself).
"""

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class Gates:
    def __init__(self) -> None:
        # key -> (its lock, how many hold or wait for it)
        self._gates: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def through(self, key: Hashable) -> AsyncIterator[None]:
        """Hold `key`'s gate for the block; others asking for the same key wait their turn."""
        lock, users = self._gates.get(key) or (asyncio.Lock(), 0)
        self._gates[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._gates[key]
            if users == 1:
                del self._gates[key]
            else:
                self._gates[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._gates)
