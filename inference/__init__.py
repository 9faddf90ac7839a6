"""The inference worker and its engine. `from inference import LLM, SamplingParams`.

Both names load lazily, so importing `inference.engine.*` (the CLI, the router's tokenizer)
does not pay for the whole engine.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine.sampling_params import SamplingParams
    from .llm import LLM

__all__ = ["LLM", "SamplingParams"]


def __getattr__(name: str):
    if name == "LLM":
        from .llm import LLM

        return LLM
    if name == "SamplingParams":
        from .engine.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)
