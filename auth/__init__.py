"""Auth: API keys, tenants, scopes, rate limits and quotas, priority classes (Redis).

- `keys`: the key format, salted hashing, constant-time checks.
- `tenant`: a tenant's scopes, priority class and limits.
- `store`: tenants and keys in Redis (keys only as salted hashes).
- `ratelimit`: per-tenant token buckets and the concurrency cap, atomic in Redis (Lua).
- `service`: the auth actor (`kvmesh.auth.*` subjects) the gateways ask over NATS.
- `cli`: `kvmesh keys create|list|revoke`.
"""
