"""The gateway: the OpenAI-compatible HTTP edge (`app.py`), its side of auth, admission and the
result cache, and the mesh client that routes requests and reads workers' deltas
(`mesh_client.py`); `server.py` runs one process or a supervisor of several on one port."""
