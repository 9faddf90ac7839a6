"""The engine: a paged-KV, continuous-batching LLM engine (`engine.LLMEngine`), with no mesh,
NATS or telemetry imports; the worker drives it in its own process (inference/engine_loop.py).

Inside this package modules import each other relatively (`from .scheduler import ...`).
Importing the package itself loads nothing, so `inference.engine.tokenizer` stays cheap for the
router and the CLI. docs/ARCHITECTURE.md ("The engine's step") draws how the parts fit.
"""
