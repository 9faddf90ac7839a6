"""bench/gpu_serving.py's mesh throughput counts the tokens streamed inside its window, each
request's spread from its first token to its end, as the engine alone counts its window's
tokens: a request straddling an edge counts for its part inside, a failed one not at all."""

from __future__ import annotations

from bench.gpu_serving import window_tokens


def test_tokens_count_for_the_part_of_each_request_inside_the_window() -> None:
    results = [
        (0.0, 1.0, 3.0, 100, True),    # wholly inside [1, 11]: 100
        (9.0, 10.0, 12.0, 100, True),  # half inside: 50
        (0.0, 0.5, 1.5, 40, True),     # half inside: 20
        (2.0, 3.0, 4.0, 100, False),   # failed: 0
        (11.5, 12.0, 13.0, 100, True),  # after: 0
        (5.0, 6.0, 6.0, 7, True),      # every token in one event, inside: 7
    ]
    assert window_tokens(results, 1.0, 11.0) == 177.0


def test_lockstep_waves_count_as_their_tokens_not_as_whole_requests() -> None:
    """256 streams in lockstep, 3 s a request, a 10 s window: whole requests ending inside
    it count 3 or 4 waves by the window's phase; the tokens streamed inside always 10/3."""
    waves = [(t - 3.0, t - 3.0, t, 128, True) for t in (3.0 * k for k in range(1, 8))] * 256
    whole = set()
    for start in (0.5, 2.5):
        got = window_tokens(waves, start, start + 10.0)
        assert abs(got - 10 / 3 * 256 * 128) < 1e-6, (start, got)
        whole.add(sum(1 for r in waves if start <= r[2] <= start + 10.0) // 256)
    assert whole == {3, 4}
