"""The engine's end of the command pipe (`engine_pipe.CommandReader`): every whole frame the
pipe holds, in order, whatever pieces the bytes arrive in; a wait only when asked to, or for
the rest of a frame; EOFError once the worker's end is closed."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from inference.engine_pipe import CommandReader, frame


def _pipe() -> tuple[CommandReader, object]:
    read, write = multiprocessing.Pipe(duplex=False)
    return CommandReader(read), write


def test_every_frame_there_is_in_order_and_nothing_when_empty() -> None:
    reader, write = _pipe()
    assert reader.take(block=False) == []
    for i in range(5):
        write.send({"n": i})  # Connection's own framing, as the worker's writer makes it
    assert reader.take(block=False) == [{"n": i} for i in range(5)]
    assert reader.take(block=False) == []


def test_a_frame_in_pieces_is_waited_for_whole() -> None:
    reader, write = _pipe()
    whole = frame(list(range(1000)))  # header and body, as the worker's writer sends them
    first, rest = whole[:7], whole[7:]  # the header and three bytes of the body, then the rest

    def later() -> None:
        time.sleep(0.2)
        os.write(write.fileno(), rest)  # the bytes after the first piece, raw

    os.write(write.fileno(), first)
    threading.Thread(target=later).start()
    assert reader.take(block=False) == [list(range(1000))]


def test_a_frame_larger_than_the_pipe_comes_whole() -> None:
    reader, write = _pipe()
    big = list(range(300_000))  # ~1.5 MB pickled: many times a pipe's buffer
    threading.Thread(target=write.send, args=(big,)).start()
    assert reader.take(block=True) == [big]


def test_block_waits_for_the_first_frame() -> None:
    reader, write = _pipe()
    threading.Timer(0.2, write.send, args=("hello",)).start()
    assert reader.take(block=True) == ["hello"]


def test_a_closed_pipe_ends_the_reader() -> None:
    reader, write = _pipe()
    write.send("last")
    write.close()
    assert reader.take(block=False) == ["last"]
    with pytest.raises(EOFError):
        reader.take(block=True)


def test_a_pipe_closed_inside_a_frame_ends_the_reader() -> None:
    reader, write = _pipe()
    os.write(write.fileno(), frame("cut short")[:6])  # the worker died while writing
    write.close()
    with pytest.raises(EOFError):
        reader.take(block=False)
