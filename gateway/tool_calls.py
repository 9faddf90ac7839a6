"""Tool calls parsed out of the model's text, whole (`split_tool_calls`) or as it streams
(`ToolCallStream`).

Two forms are recognised:
- Hermes/Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number, with
  text around them (the text is the message's content). The tool grammar (kvmesh/grammar.py)
  drives any model, the default one included, to this form.
- Llama 3.1: the whole answer is one JSON object `{"name": ..., "parameters": {...}}`
  (optionally after `<|python_tag|>`).
A call is only taken when its name is one of the request's tools and its arguments are a JSON
object; anything else stays content, so a model that writes about tools is not misread.
A call ends at the first `</tool_call>` outside its JSON's strings (`CloseTagScan`): an argument
may hold the tag itself. (When the model ends the answer with a string of a call's JSON still
open and a tag after it, the JSON is broken: that call ends at that tag, and stays content.)
A call cut off unfinished (by max_tokens) is still a call, as OpenAI answers one, once its
name is written whole (or the request's `tool_choice` named the function): its arguments are
the text written so far, maybe not yet JSON (`cut_off_call`). One whose name was not written
is dropped, so the `<tool_call>` markup never reaches a client as content (but a free
answer's lone trailing `<`, which may be its own).
With `parallel` false (the request's `parallel_tool_calls: false`) only the first call is
taken: later calls, cut off or not, are dropped, neither calls nor content,
so a stream never shows any of them. (Under `tool_choice` `required` or a named function the
tool grammar already allows one call, and so does `auto`'s grammar when a function is strict;
else nothing constrains the text.)
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from kvmesh.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from kvmesh.wire import ToolCall

_PYTHON_TAG = "<|python_tag|>"
# A call's head as the tool grammar writes it, name first; then its arguments' key (Llama
# 3.1's `parameters`) and the arguments, or that key cut off while it was written.
_NAME = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]*)"\s*')
_ARGUMENTS = re.compile(r',\s*"(?:arguments|parameters)"\s*:\s*(.*)', re.DOTALL)
_KEY_CUT = re.compile(r'(,\s*("[a-z]*"?\s*)?)?')
_JSON_START = re.compile(r"\S")
_JSON_MARK = re.compile(r'["{}\[\]<]')  # what changes a call's JSON state, or may open the tag
_STRING_MARK = re.compile(r'["\\]')


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_call(text: str, names: frozenset[str]) -> ToolCall | None:
    """One call from its JSON text, or None when it is not a call to one of `names`."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(args, ensure_ascii=False))


def cut_off_call(text: str, names: frozenset[str], named: str | None) -> ToolCall | None:
    """The call that `text`, a call's JSON cut off unfinished, was writing: whole when only
    its closing tag is missing; else, when its name is written and one of `names`, or the
    request named the function (`named`), that function with the arguments written so far
    ("" before them). None when it is no call (whole JSON that is not one, an unknown name,
    or a name cut off with no function named)."""
    scan = CloseTagScan()
    scan.find(text)
    if not scan.in_string:  # a close tag cut off; inside a string it is the argument's text
        text = text[:len(text) - _partial_suffix(text, TOOL_CALL_CLOSE)]
    try:
        json.loads(text)
    except ValueError:
        pass  # unfinished: read as far as it goes
    else:
        return parse_call(text.strip(), names)
    name, arguments = named, ""
    if (head := _NAME.match(text)) is not None:
        rest = text[head.end():]
        if (args := _ARGUMENTS.match(rest)) is not None:
            name, arguments = head.group(1), args.group(1)
        elif _KEY_CUT.fullmatch(rest):
            name = head.group(1)
    return ToolCall(new_call_id(), name, arguments) if name in names else None


def split_tool_calls(text: str, names: frozenset[str], parallel: bool = True,
                     named: str | None = None,
                     cut_off: bool = False) -> tuple[str | None, list[ToolCall]]:
    """(the content left, the calls) of a whole answer; content None when nothing is left.
    `cut_off`: max_tokens ended the answer, not the model (see `ToolCallStream.finish`)."""
    stream = ToolCallStream(names, parallel, named)
    events = [*stream.feed(text), *stream.finish(cut_off)]
    content = "".join(e for e in events if isinstance(e, str))
    calls = [e for e in events if isinstance(e, ToolCall)]
    if calls:
        return (content if content.strip() else None), calls
    return content, calls


@dataclass
class CloseTagScan:
    """Finds the `</tool_call>` that ends a call, outside the strings of the call's JSON (an
    argument may hold the tag), in the call's text after `<tool_call>` as it grows: each
    `find` reads on from where the last one stopped, so a streamed call is read once.

    When the call's text does not open with `{` (no JSON to track), or once its JSON has
    closed, the first tag ends the call; so does a tag inside the JSON but outside its strings
    (the JSON is broken there: it is no call)."""

    pos: int = 0  # where the next find reads on from
    depth: int = 0  # open objects and arrays
    in_string: bool = False
    plain: bool = False  # no JSON to track (any more): the first tag ends the call

    def find(self, body: str) -> int:
        """Where the close tag starts in `body` (the text given to the last `find` and what
        has been added to it since), or -1 while it is not there whole."""
        while not self.plain:
            step = self._string if self.in_string else self._json if self.depth else self._open
            if (found := step(body)) is not None:
                return found
        end = body.find(TOOL_CALL_CLOSE, self.pos)
        if end < 0:  # a tag begun at the end is read again with what follows
            self.pos = max(self.pos, len(body) - len(TOOL_CALL_CLOSE) + 1)
        return end

    # Each step reads on from `pos`: None when it moved on, else what `find` returns (-1 at
    # the end of the text so far, `pos` left where reading must go on).

    def _open(self, body: str) -> int | None:
        if (first := _JSON_START.search(body, self.pos)) is None:
            self.pos = len(body)
            return -1
        self.plain, self.depth, self.pos = first.group() != "{", 1, first.end()
        return None

    def _string(self, body: str) -> int | None:
        mark = _STRING_MARK.search(body, self.pos)
        if mark is None or (mark.group() == "\\" and mark.end() == len(body)):
            self.pos = len(body) if mark is None else mark.start()  # the escaped one to come
            return -1
        self.in_string = mark.group() == "\\"  # an escape: skip the character it escapes
        self.pos = mark.end() + self.in_string
        return None

    def _json(self, body: str) -> int | None:
        if (mark := _JSON_MARK.search(body, self.pos)) is None:
            self.pos = len(body)
            return -1
        char, at = mark.group(), mark.start()
        if char == "<" and TOOL_CALL_CLOSE.startswith(body[at:at + len(TOOL_CALL_CLOSE)]):
            self.pos = at  # the tag, or its beginning at the end of the text so far
            return at if body.startswith(TOOL_CALL_CLOSE, at) else -1
        self.pos = mark.end()
        if char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
            self.plain = self.depth == 0  # the JSON is whole: what follows is no JSON
        elif char == '"':
            self.in_string = True
        return None


@dataclass
class ToolCallStream:
    """Feeds text pieces in, gets content pieces (str) and `ToolCall`s out, in order: a call
    as soon as it is complete, and from `finish` one the answer was cut off in.

    Content is held back only while it could be the start of `<tool_call>`, or, at the start
    of the answer, while it could be a Llama-3.1 JSON call (then until the answer ends).
    Whitespace is held until text follows it: whitespace around calls is dropped.
    """

    names: frozenset[str]
    parallel: bool = True  # False: the first call only (see the module docstring)
    named: str | None = None  # the function `tool_choice` names, if it names one
    _buf: str = ""
    _in_call: bool = False
    _started: bool = False  # some content was released
    _whole_json: bool = False  # the answer opened like a bare JSON call: hold it all
    _ws: str = ""  # whitespace not yet known to be content
    _scan: CloseTagScan = field(default_factory=CloseTagScan)  # of the call being read
    calls: int = field(default=0)

    def feed(self, text: str) -> list[str | ToolCall]:
        self._buf += text
        out: list[str | ToolCall] = []
        while True:
            if self._whole_json:
                return out
            if self._in_call:
                end = self._scan.find(self._buf)
                if end < 0:
                    return out
                body, self._buf = self._buf[:end], self._buf[end + len(TOOL_CALL_CLOSE):]
                self._in_call = False
                call = parse_call(body.strip(), self.names)
                if call is None:
                    self._emit(out, TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE)
                else:
                    self._ws = ""
                    if self.parallel or not self.calls:  # else a second one: dropped
                        out.append(call)
                        self.calls += 1
                continue
            if not self._started and not self.calls:
                head = self._buf.lstrip()
                if head.startswith(("{", _PYTHON_TAG)):
                    self._whole_json = True
                    return out
                if not head or _PYTHON_TAG.startswith(head):
                    return out
            start = self._buf.find(TOOL_CALL_OPEN)
            if start >= 0:
                self._emit(out, self._buf[:start])
                self._buf = self._buf[start + len(TOOL_CALL_OPEN):]
                self._in_call, self._scan = True, CloseTagScan()
                continue
            keep = _partial_suffix(self._buf, TOOL_CALL_OPEN)
            self._emit(out, self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep:]
            return out

    def _emit(self, out: list[str | ToolCall], text: str) -> None:
        if not text.strip():
            self._ws += text
            return
        body = text.rstrip()
        out.append(self._ws + body)
        self._ws = text[len(body):]
        self._started = True

    def finish(self, cut_off: bool = False) -> list[str | ToolCall]:
        """Everything still held, at the end of the answer. An answer that ends inside a
        call, or inside its `<tool_call>` tag, was cut off writing it: `_cut_off`. But when
        the model ended it (not `cut_off` by max_tokens) inside a string of a call's JSON
        that a tag follows, the JSON is broken: the call ends at that tag, and is no call."""
        out: list[str | ToolCall] = []
        while not cut_off and self._in_call and TOOL_CALL_CLOSE in self._buf:
            self._scan.plain, self._scan.pos = True, 0
            out += self.feed("")
        return out + self._rest()

    def _rest(self) -> list[str | ToolCall]:
        buf, self._buf = self._buf, ""
        if self._in_call:
            return self._cut_off(buf)
        if not self.calls:
            buf, self._ws = self._ws + buf, ""
        if self._whole_json:
            text = buf.strip().removeprefix(_PYTHON_TAG).strip()
            if (call := cut_off_call(text, self.names, self.named)) is not None:
                self.calls += 1
                return [call]
        elif (opened := _partial_suffix(buf, TOOL_CALL_OPEN)) > 1 or (opened and self.named):
            # a lone "<" may end a free answer ("a <"); longer, or when a call was forced,
            # it is the tag cut off
            text = buf[:len(buf) - opened].rstrip()
            return ([text] if text else []) + self._cut_off("")
        return [buf] if buf else []

    def _cut_off(self, body: str) -> list[str | ToolCall]:
        """The call an answer was cut off in (`body`: its text after `<tool_call>`), or
        nothing: `cut_off_call` finds none, or it is a second call and `parallel` is false."""
        if self.calls and not self.parallel:
            return []
        call = cut_off_call(body, self.names, self.named)
        if call is None:
            return []
        self.calls += 1
        return [call]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}
