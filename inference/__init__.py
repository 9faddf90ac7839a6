"""The inference worker and its engine. `from inference import LLM, SamplingParams`."""

from .engine.sampling_params import SamplingParams
from .llm import LLM

__all__ = ["LLM", "SamplingParams"]
