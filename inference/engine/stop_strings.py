"""Stop strings over streamed text: found across token boundaries, never emitted.

`StopStringFilter.feed(text)` returns what is safe to show now. It holds back the longest
tail that could still grow into a stop string; when a stop string appears, everything from
its start on is dropped (with `keep`, everything after its end) and `stopped` is set. Text
fed with `look=False` (a choice's first `min_tokens` tokens) is not searched, but its tail
that could begin a stop string is held back all the same, so one that begins there and ends
in a later token is found (vLLM's rule: its check of a token reaches back over the text
before it). A stop string counts only if it starts after every text shown, so what was shown
is never taken back; one that ends inside the `look=False` text is never found.
"""

from __future__ import annotations


class StopStringFilter:
    def __init__(self, stops: list[str], keep: bool = False):
        self.stops = stops
        self.keep = keep  # the stop string found is shown, the text ending with it
        self._text = ""
        self._emitted = 0
        self.stopped = False

    def feed(self, delta: str, final: bool = False, look: bool = True) -> str:
        if self.stopped:
            return ""
        if not self.stops:  # the common case, per token: nothing to hold back or keep
            return delta
        self._text += delta
        if not look:
            return self._release(len(self._text) if final else len(self._text) - self._held_tail())
        # A new match must end inside the new text, so it starts after this point, and after
        # the text already shown.
        longest = max(map(len, self.stops))
        lo = max(self._emitted, len(self._text) - len(delta) - longest + 1)
        hits = [(i, i + len(s)) for i, s in ((self._text.find(s, lo), s) for s in self.stops)
                if i != -1]
        if hits:
            self.stopped = True
            start, end = min(hits)  # the first to start; of two there, the shorter
            return self._release(end if self.keep else start)
        return self._release(len(self._text) if final else len(self._text) - self._held_tail())

    def _held_tail(self) -> int:
        text = self._text
        for n in range(min(len(text) - self._emitted, max(map(len, self.stops)) - 1), 0, -1):
            if any(s.startswith(text[-n:]) for s in self.stops):
                return n
        return 0

    def _release(self, end: int) -> str:
        end = max(end, self._emitted)
        out = self._text[self._emitted : end]
        self._emitted = end
        return out
