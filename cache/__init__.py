"""The result cache: whole answers of deterministic requests in Redis, with single-flight.

`cache/key.py` decides what is cacheable and its key, `cache/service.py` is the actor over
Redis (`kvmesh.cache.get` / `kvmesh.cache.put`), `cache/client.py` is the gateway's side.
The same actor serves the `/v1/responses` store (`cache/responses_store.py`).
"""
