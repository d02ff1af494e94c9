"""Group commit: writes submitted while a batch is being written go out together in the next one.

One command per batch instead of one per caller is what bounds throughput on FerretDB and on the
broker; each caller still waits for, and gets, its own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Writes a batch and answers one result per item, in order: a value, or the exception that
# item's caller gets. Raising fails the whole batch.
WriteBatch = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self, write_batch: WriteBatch[T, R], *, max_batch: int, linger_seconds: float = 0.0
    ) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        # How long the first item of a batch waits for others to join it.
        self._linger = linger_seconds
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[R] = loop.create_future()
        self._waiting.append((item, result))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        return await result

    async def _write(self) -> None:
        await asyncio.sleep(self._linger)  # let the others of this moment join the first batch
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                outcomes: Sequence[R | BaseException] = await self._write_batch(
                    [item for item, _ in batch]
                )
            except Exception as exc:
                outcomes = [exc] * len(batch)
            for (_, result), outcome in zip(batch, outcomes, strict=True):
                if result.done():
                    continue  # its caller was cancelled
                if isinstance(outcome, BaseException):
                    result.set_exception(outcome)
                else:
                    result.set_result(outcome)
