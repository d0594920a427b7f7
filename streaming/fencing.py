"""Fencing tokens for the workers' Redis writes: a per-partition epoch in `<ns>:epoch` (field
`topic:partition`), bumped by each worker that is assigned the partition.

A worker evicted from its group while stuck (retrying Redis, a long GC pause) does not know it
was: without a fence its transaction could still land after the new owner's, counting items
twice and moving offsets backwards. Every flush therefore WATCHes the epoch hash and lands only
while each partition still has the epoch its writer was given.
"""

from __future__ import annotations

from collections.abc import Callable

import redis


def epoch_key(namespace: str) -> str:
    return f"{namespace}:epoch"


def claim_partitions(client: redis.Redis, namespace: str, topic: str,
                     partitions: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Take `partitions` over: bump each one's epoch (fencing off every earlier owner) and read
    their stored next offsets, in one transaction. Returns (partition -> epoch now held,
    partition -> stored offset, for those that have one)."""
    if not partitions:
        return {}, {}
    fields = [f"{topic}:{p}" for p in partitions]
    with client.pipeline(transaction=True) as pipe:
        for f in fields:
            pipe.hincrby(epoch_key(namespace), f, 1)
        pipe.hmget(f"{namespace}:offsets", fields)
        *epochs, offsets = pipe.execute()
    return (dict(zip(partitions, (int(e) for e in epochs))),
            {p: int(o) for p, o in zip(partitions, offsets) if o is not None})


def holds(current: list, epochs: dict[str, int]) -> bool:
    """Whether the epochs read back (in `epochs`' order) are still exactly `epochs`."""
    return all(c is not None and int(c) == e for c, e in zip(current, epochs.values()))


def fenced_write(client: redis.Redis, namespace: str, epochs: dict[str, int],
                 queue: Callable[[redis.client.Pipeline], None]) -> bool:
    """Run the writes `queue` adds in one MULTI that lands only while every `topic:partition`
    in `epochs` still has that epoch; False (nothing written) when another worker took one over."""
    key = epoch_key(namespace)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                if epochs:
                    pipe.watch(key)
                    if not holds(pipe.hmget(key, list(epochs)), epochs):
                        return False
                    pipe.multi()
                queue(pipe)
                pipe.execute()
                return True
            except redis.WatchError:  # some partition's epoch moved (maybe not ours): check again
                continue
