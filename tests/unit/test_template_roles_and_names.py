"""What a chat template is given for OpenAI's `developer` role and a message's `name`
(router/tool_prompt.py): developer is system, and a name the template does not show is written
before the text."""

from __future__ import annotations

from kvmesh.wire import ChatMessage
from router.tool_prompt import renders_names, template_inputs

PLAIN = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}DEFAULT|"
         "{% endif %}{{ m['role'] }}:{{ m['content'] }}|{% endfor %}")
NAMED = ("{% for m in messages %}{{ m['role'] }}({{ m.get('name', '') }}):{{ m['content'] }}|"
         "{% endfor %}")


def test_developer_is_given_as_system() -> None:
    msgs, _ = template_inputs([ChatMessage("developer", "Be terse."), ChatMessage("user", "hi")],
                              None, PLAIN)
    assert [m["role"] for m in msgs] == ["system", "user"]


def test_probe_finds_whether_a_template_shows_names() -> None:
    assert renders_names(NAMED) and not renders_names(PLAIN)
    assert not renders_names(None) and not renders_names("{{ raise_exception('no') }}")


def test_a_name_the_template_does_not_show_is_written_before_the_text() -> None:
    msgs, _ = template_inputs([ChatMessage("user", "hi", name="bob"),
                               ChatMessage("assistant", "", name="ann")], None, PLAIN)
    assert [(m["content"], m["name"]) for m in msgs] == [("bob: hi", "bob"), ("", "ann")]


def test_a_template_that_shows_names_gets_them_as_they_are() -> None:
    msgs, _ = template_inputs([ChatMessage("user", "hi", name="bob")], None, NAMED)
    assert msgs == [{"role": "user", "content": "hi", "name": "bob"}]
