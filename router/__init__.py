"""The router: tokenises requests (`tokenize.py`), scores workers by cached prefix and load
(`policy.py`, `kv_index.py`), and forwards to the chosen worker with retries and circuit
breakers (`service.py`, `health.py`)."""
