"""The offline API: `LLM(model).generate(prompts, params)` runs to completion and returns
whole results, batching every prompt through one engine."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import fields

from .engine.config import EngineConfig
from .engine.embedding import PoolingParams
from .engine.engine import LLMEngine
from .engine.outputs import Completion, RequestOutput, TokenLogprob
from .engine.sampling_params import SamplingParams

Prompt = str | list[int]


class LLM:
    """`model`: None for the default SmolLM2-135M-Instruct, an HF folder, a GGUF file, or
    `dummy:<preset>`. Keyword arguments are `EngineConfig` fields."""

    def __init__(self, model: str | None = None, **engine_kwargs: object):
        known = {f.name for f in fields(EngineConfig)}
        unknown = set(engine_kwargs) - known
        if unknown:
            raise TypeError(f"unknown engine options: {sorted(unknown)}")
        self.engine = LLMEngine.from_model(model, EngineConfig(**engine_kwargs))  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the other tensor-parallel ranks, if any (they also stop when this process
        exits); a tensor-parallel engine cannot step afterwards."""
        from .engine.tp_launch import shutdown

        shutdown()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        plist = (
            list(params)
            if isinstance(params, Sequence)
            else [params or SamplingParams()] * len(prompts)
        )
        if len(plist) != len(prompts):
            raise ValueError("params: need one SamplingParams per prompt, or one for all")
        ids = [self._encode(p) for p in prompts]
        order = [f"{uuid.uuid4().hex}-{i}" for i in range(len(ids))]
        results: dict[str, RequestOutput] = {}
        for rid, prompt_ids, p in zip(order, ids, plist, strict=True):
            self.engine.add_request(rid, prompt_ids, p)
            results[rid] = RequestOutput(
                rid,
                prompt_ids,
                [
                    Completion(i, "", [], None, [] if p.logprobs is not None else None)
                    for i in range(p.n)
                ],
                usage=None,
            )  # type: ignore[arg-type]
        while self.engine.has_unfinished():
            for out in self.engine.step():
                res = results[out.request_id]
                c = res.outputs[out.index]
                c.text += out.text
                c.token_ids.extend(out.token_ids)
                if out.logprobs and c.logprobs is not None:
                    c.logprobs.extend(out.logprobs)
                c.finish_reason = out.finish_reason or c.finish_reason
                if out.usage is not None:
                    res.usage = out.usage
                if out.prompt is not None:
                    res.prompt = out.prompt
        return [results[rid] for rid in order]

    def chat(
        self, messages: list[dict[str, str]], params: SamplingParams | None = None
    ) -> RequestOutput:
        """One conversation through the model's chat template."""
        if self.tokenizer is None:
            raise ValueError("chat needs a tokenizer; dummy models have none")
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return self.generate([self.tokenizer.encode(prompt)], params)[0]

    def embed(
        self, prompts: Prompt | Sequence[Prompt], params: PoolingParams | None = None
    ) -> list[list[float]]:
        """One vector per prompt, pooled as the engine's `pooling` says (embedding.py)."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        rid = uuid.uuid4().hex
        ids = [self._encode(p) for p in prompts]
        self.engine.add_embedding(rid, ids, params or PoolingParams())
        vectors: dict[int, list[float]] = {}
        while self.engine.has_unfinished():
            self.engine.step()
            for out in self.engine.embedder.take_outputs():
                vectors[out.index] = out.floats()
        return [vectors[i] for i in range(len(prompts))]

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("prompt: text needs a tokenizer; pass token ids to a dummy model")
            return self.tokenizer.encode(prompt)
        return list(prompt)


__all__ = ["LLM", "PoolingParams", "SamplingParams", "TokenLogprob"]
