"""Item business stats' history, declared for Feast's offline store: point-in-time joins for training.

`onevision.catalog.item_stats.stats_history` writes one row per item and UTC day boundary where
its 30-day stats change, drops back to zero included, so the latest row at or before a time is
the item's stats at that time and the view never needs to expire. `features/history.py` applies
these to an in-process store and joins with `get_historical_features`.

Only functions here, no module-level Feast objects: `feast apply` in this repo imports every
file and would otherwise register a second `item` entity next to definitions.py's online one.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

VIEW = "item_stats_history"
NEVER_EXPIRES = timedelta(days=3650)


def item_entity() -> Entity:
    return Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalog item")


def item_stats_history_source(path: str) -> FileSource:
    """The stats' history as a Parquet file at `path` (`item_id`, `event_timestamp`, the stats)."""
    return FileSource(name="item_stats_history_file", path=path, timestamp_field="event_timestamp")


def item_stats_history_view(source: FileSource, item: Entity) -> FeatureView:
    """clicks/orders/GMV over the 30 days before each day boundary; the change rows make the
    window right, so the TTL only has to be longer than any history."""
    return FeatureView(
        name=VIEW,
        entities=[item],
        ttl=NEVER_EXPIRES,
        schema=[
            Field(name="clicks_30d", dtype=Int64, description="clicks in the 30 days before the row's time"),
            Field(name="orders_30d", dtype=Int64, description="orders in the 30 days before the row's time"),
            Field(name="gmv_30d", dtype=Float64,
                  description="those orders' prices summed; NaN where one's price is unknown"),
        ],
        online=False,
        source=source,
    )


def history_definitions(path: str) -> list:
    """The objects to apply for a history file at `path`: entity, source, view."""
    item, source = item_entity(), item_stats_history_source(path)
    return [item, source, item_stats_history_view(source, item)]
