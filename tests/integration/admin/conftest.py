"""Fixtures of the admin CLI's integration tests: a database of the test's own, prepared as the
CLI prepares it (indexes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from services.admin import commands


@pytest.fixture
async def db(
    mongo: AsyncMongoClient[dict[str, Any]], unique: str
) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    database = mongo[f"it_{unique}"]
    await commands.prepare(database)
    yield database
    await mongo.drop_database(database.name)
