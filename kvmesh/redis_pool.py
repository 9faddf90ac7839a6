"""The Redis client of the actors that keep state in Redis (auth, the result cache).

redis-py's default pool fails a command at once with `MaxConnectionsError` ("Too many
connections") when all of its connections are busy, so a burst of concurrent handlers past the
pool's size read as Redis being down (auth refused them with 503). This pool makes a command
wait for a free connection instead, bounded like the command itself.
"""

from __future__ import annotations

import redis.asyncio as aioredis


def redis_client(url: str, timeout: float | None, max_connections: int,
                 decode_responses: bool = False) -> aioredis.Redis:
    """A client of `url` with at most `max_connections` connections. `timeout` (None = no
    bound) bounds each command, each connect, and the wait for a free connection; past it the
    command raises a `redis.exceptions.ConnectionError` or `TimeoutError`, as Redis down does.
    Closing the client closes its pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, decode_responses=decode_responses)
    return aioredis.Redis.from_pool(pool)
