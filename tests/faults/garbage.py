"""Garbage frames on NATS subjects: every request subject must answer 400 `invalid_frame`;
broadcasts (no reply subject) must log and drop them. The caller then checks that every
service is still alive."""

from __future__ import annotations

import nats

from kvmesh import wire
from kvmesh.wire import ErrorReply, Ping

GARBAGE = [b"\xc1 not msgpack", b"", b"\x93\x01\x02\x03", wire.encode(Ping()) + b"\xff"]


async def send_garbage(nats_url: str, request_subjects: list[str], broadcasts: list[str],
                       frames: list[bytes] = GARBAGE) -> list[str]:
    """Send each frame to each subject; the replies that were not a 400 `invalid_frame`."""
    nc = await nats.connect(nats_url)
    problems = []
    try:
        for subject in request_subjects:
            for frame in frames:
                err = wire.decode((await nc.request(subject, frame, timeout=5)).data, ErrorReply)
                if err.status != 400 or err.code != "invalid_frame":
                    problems.append(f"{subject} {frame!r}: {err}")
        for subject in broadcasts:
            for frame in frames:
                await nc.publish(subject, frame)
        await nc.flush()
    finally:
        await nc.close()
    return problems
