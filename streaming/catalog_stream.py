"""The catalog change stream (`onevision.catalog`): publishing item changes, and following them.

One partition, keyed by item id, read from its start by every consumer (no consumer group):
a replica, the ingress, a stream worker or the DPO job that starts, restarts or loads a new
model version folds the whole log onto its catalog and is where every other consumer is. The log
is never compacted (an update names only the fields it changes, so an item's add must stay) and
begins again with a new catalog snapshot (a model trained on the new catalog).

A record that does not parse, or that was encoded with a tokenizer the consumer does not serve,
is counted and logged and changes nothing there; the others still apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from kafka import KafkaConsumer, TopicPartition

from infra.settings import Settings
from onevision.catalog.changes import CatalogChangeError, ItemChange, ItemState, fold, parse_change

log = logging.getLogger(__name__)
PUBLISH_BATCH = 16  # new photos encoded, then sent, at a time: the first are served while the rest encode


def send_changes(producer, settings: Settings, changes: Iterable[ItemChange], timeout_s: float = 30.0) -> int:
    """Produce changes in order and wait until the broker has all of them; returns how many."""
    futures = [producer.send(settings.kafka.catalog_topic, key=c.item_id.encode(), value=c.to_json())
               for c in changes]
    producer.flush(timeout_s)
    for f in futures:
        f.get(timeout=timeout_s)  # raises when the broker refused one
    return len(futures)


class CatalogFollower:
    """The catalog's changes as one consumer sees them: `states`, every changed item's state after
    all records read (`catalog.changes.fold`); `poll` reads what is new and says which items
    changed; `catch_up` reads to the log's end as of the call (a worker that meets an event for an
    item it does not know asks this before calling the item unknown)."""

    def __init__(self, settings: Settings, client_id: str = "onevision-catalog", keep_photos: bool = True):
        """`keep_photos`: keep the photos' bytes in `states` (only a consumer that serves them needs to)."""
        self.topic, self.keep_photos = settings.kafka.catalog_topic, keep_photos
        self.consumer = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False,
                                      auto_offset_reset="earliest", client_id=client_id,
                                      max_partition_fetch_bytes=32 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
                                      receive_message_max_bytes=80 * 1024 * 1024)
        self.partitions: list[TopicPartition] = []
        self.states: dict[str, ItemState] = {}
        self.counts = {"records": 0, "malformed": 0}
        self.last_change_ts = 0  # ms: the time stamped on the newest change read (when its publishing began)

    def _assigned(self) -> bool:
        """Whether the topic exists and is assigned (a follower started before `infra up` waits for it)."""
        if not self.partitions:
            parts = self.consumer.partitions_for_topic(self.topic)
            if not parts:
                return False
            self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self.consumer.assign(self.partitions)
            for tp in self.partitions:
                self.consumer.seek_to_beginning(tp)
        return True

    def poll(self, timeout_ms: int = 500) -> list[ItemChange]:
        """The changes read now (in log order), folded into `states`."""
        if not self._assigned():
            time.sleep(timeout_ms / 1000)
            return []
        changes = []
        for tp, msgs in self.consumer.poll(timeout_ms=timeout_ms, max_records=5000).items():
            for m in msgs:
                self.counts["records"] += 1
                try:
                    changes.append(parse_change(m.value))
                except CatalogChangeError as exc:
                    self.counts["malformed"] += 1
                    log.error("catalog change at %s/%d@%d skipped: %s", tp.topic, tp.partition, m.offset, exc)
        if changes:
            self.states = fold(changes, self.states, self.keep_photos)
            self.last_change_ts = max(self.last_change_ts, max(c.ts for c in changes))
        return changes

    def catch_up(self, max_s: float = 10.0) -> list[ItemChange]:
        """Read to the log's end as it is now (then one poll more: the embedded broker reports the
        last batch's start as the end); returns what was read."""
        out: list[ItemChange] = []
        if not self._assigned():
            return out
        ends = self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + max_s
        while any(self.consumer.position(tp) < ends[tp] for tp in self.partitions) and time.monotonic() < deadline:
            out += self.poll(200)
        while time.monotonic() < deadline:  # the last batch: until a poll reads nothing more
            before = self.position()
            out += self.poll(200)
            if self.position() == before:
                break
        return out

    def position(self) -> int:
        """Records read so far (the one partition's offset)."""
        return sum(self.consumer.position(tp) for tp in self.partitions) if self.partitions else 0

    def close(self) -> None:
        self.consumer.close()


def changed_states(follower: CatalogFollower, changes: Sequence[ItemChange]) -> dict[str, ItemState]:
    """The folded states of the items these changes touched (what a consumer applies to catch up
    with them: states, not the changes, so applying them is idempotent)."""
    return {c.item_id: follower.states[c.item_id] for c in changes}


def publish_diff(settings: Settings, old, new, registry, model: str | None = None, progress: bool = True,
                 on_sent: Callable[[dict[str, int]], None] | None = None) -> dict:
    """`onevision catalog publish OLD NEW`: the changes from catalog `old` (what is served) to `new`,
    new photos encoded with the tokenizer of `model`'s CURRENT version (default the generator of
    `old`'s name), produced to the catalog topic batch by batch as they are ready (removals and
    updates without a new photo first, before the encoder loads; then the new photos as they are
    encoded: the first launches are served before the last are encoded). `on_sent` hears the
    counts by kind after every batch. Returns the counts by kind. A run that fails part way has
    sent the batches before the failure; running it again is safe (consumers fold an item's
    records into its state, so a record read twice changes nothing)."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from onevision.catalog.format import load_catalog
    from onevision.registry import current_version, load_version, resolve_ref
    from onevision.tokenizers.encode_items import NewItemEncoder, change_batches
    from streaming.producer import kafka_producer, now_ms

    old_c, new_c = load_catalog(old), load_catalog(new)
    model = model or f"generator-vrq-{Path(old).name}"
    version = current_version(registry, model)
    if version is None:
        raise FileNotFoundError(f"{registry}/{model} has no current version: the served model's tokenizer encodes "
                                "new items (train it first, or name it with --model)")
    path = Path(registry) / model / version
    tokenizer = resolve_ref(load_version(path)[1]["tokenizer"], path)
    counts = {"add": 0, "update": 0, "remove": 0}
    producer = kafka_producer(settings)
    try:
        with tqdm(desc="catalog changes published", unit="record", disable=not progress) as bar:
            for changes in change_batches(old_c, new_c, lambda: NewItemEncoder(tokenizer), now_ms(),
                                          batch=PUBLISH_BATCH):
                send_changes(producer, settings, changes)
                for c in changes:
                    counts[c.kind] += 1
                bar.update(len(changes))
                if on_sent is not None:
                    on_sent(dict(counts))
    finally:
        producer.close()
    log.info("published %s from %s to %s (tokenizer %s)", counts, old, new, tokenizer)
    return counts
