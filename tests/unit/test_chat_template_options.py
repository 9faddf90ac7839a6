"""vLLM's chat-template fields: checked at the gateway (gateway/chat_template_fields.py) and
rendered by the router (router/tokenize.py); a continued last message equals transformers'
`continue_final_message` on the real SmolLM2 template, and template variables reach the
template (Qwen3's `enable_thinking` pattern)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ApiError
from gateway.openai_request import parse_chat
from gateway.tokenize_routes import tokenize_request
from inference.engine.tokenizer import Tokenizer
from kvmesh.wire import ChatMessage, ChatTemplateOptions
from router.tokenize import PromptTokenizer, open_final

PREFILL = [{"role": "user", "content": "Name a colour."},
           {"role": "assistant", "content": "My favourite colour is "}]
OPEN = ChatTemplateOptions(add_generation_prompt=False, continue_final_message=True)
THINKING = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% if enable_thinking is defined and "
            "enable_thinking is false %}<think></think>{% endif %}{% endif %}")


@pytest.fixture(scope="module")
def smol(smollm_gguf: Path) -> PromptTokenizer:
    return PromptTokenizer.load(str(smollm_gguf))


def _msgs(raw: list[dict[str, str]]) -> list[ChatMessage]:
    return [ChatMessage(m["role"], m["content"]) for m in raw]


def _with_template(tok: PromptTokenizer, template: str) -> PromptTokenizer:
    """SmolLM2's tokenizer with another chat template."""
    t = tok.tokenizer
    return PromptTokenizer(Tokenizer(t._tok, chat_template=template,
                                     bos_token_id=t.bos_token_id,
                                     eos_token_ids=t.eos_token_ids))


def test_a_continued_message_equals_transformers(smol: PromptTokenizer,
                                                 smollm_gguf: Path) -> None:
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(smollm_gguf.parent,
                                                     gguf_file=smollm_gguf.name)
    theirs = ref.apply_chat_template(PREFILL, tokenize=False, continue_final_message=True)
    ours = smol.chat_text(_msgs(PREFILL), None, OPEN)
    assert ours == theirs and ours.endswith("My favourite colour is ")
    closed = smol.chat_text(_msgs(PREFILL), None, ChatTemplateOptions(False))
    assert closed.startswith(ours) and len(closed) > len(ours)  # its end-of-turn is cut


def test_open_final_cuts_after_the_content_trimmed_or_not() -> None:
    assert open_final("<u>hi</u><a>Hello </a>", "Hello ") == "<u>hi</u><a>Hello "
    assert open_final("<a>Hello</a>", " Hello  ") == "<a>Hello"  # the template trimmed it
    with pytest.raises(ValueError, match="continue_final_message"):
        open_final("<a>something else</a>", "Hello")


def test_template_variables_reach_the_template(smol: PromptTokenizer) -> None:
    tok = _with_template(smol, THINKING)
    msgs = _msgs(PREFILL[:1])
    assert tok.chat_text(msgs, None).endswith("<assistant>")
    off = ChatTemplateOptions(kwargs='{"enable_thinking":false}')
    assert tok.chat_text(msgs, None, off).endswith("<assistant><think></think>")


def test_a_template_failing_on_the_request_is_a_value_error(smol: PromptTokenizer) -> None:
    tok = _with_template(smol, "{{ messages[0]['content'] + depth }}")
    with pytest.raises(ValueError, match="chat template failed"):
        tok.chat_text(_msgs(PREFILL[:1]), None, ChatTemplateOptions(kwargs='{"depth":1}'))


def _chat(**fields: Any) -> Any:
    return parse_chat({"model": "m", "messages": PREFILL, **fields})


def test_the_gateway_keeps_the_options_and_refuses_bad_ones() -> None:
    req = _chat(add_generation_prompt=False, continue_final_message=True,
                chat_template_kwargs={"enable_thinking": False, "a": [1]})
    assert req.to_wire("r", "inbox").template == ChatTemplateOptions(
        False, True, '{"a":[1],"enable_thinking":false}')
    assert _chat().template == ChatTemplateOptions()
    bad = [({"continue_final_message": True}, "continue_final_message"),  # generation prompt on
           ({"add_generation_prompt": "no"}, "add_generation_prompt"),
           ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
           ({"chat_template_kwargs": ["x"]}, "chat_template_kwargs")]
    for fields, param in bad:
        with pytest.raises(ApiError) as err:
            _chat(**fields)
        assert err.value.param == param, fields
    with pytest.raises(ApiError) as err:  # the last message is the user's
        parse_chat({"model": "m", "messages": PREFILL[:1], "add_generation_prompt": False,
                    "continue_final_message": True})
    assert err.value.param == "continue_final_message"


def test_tokenize_takes_the_options_with_messages_only() -> None:
    msg = tokenize_request({"model": "m", "messages": PREFILL, "add_generation_prompt": False,
                            "continue_final_message": True})
    assert msg.template == OPEN
    for name, value in (("continue_final_message", False), ("chat_template_kwargs", {"a": 1})):
        with pytest.raises(ApiError) as err:
            tokenize_request({"model": "m", "prompt": "hi", name: value})
        assert err.value.param == name
