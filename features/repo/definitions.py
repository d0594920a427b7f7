"""OneVision's features, declared for Feast: who they belong to, their types, how they arrive.

The streaming workers keep them fresh (`streaming/`); serving reads them with
`get_online_features`. Batch sources are where an offline copy would live; OneVision's
features arrive only by push, so the files need not exist.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="a shopper")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING,
              description="a catalog item")

user_behaviour_push = PushSource(
    name="user_behaviour_push",
    batch_source=FileSource(name="user_behaviour_file", path="offline/user_behaviour.parquet",
                            timestamp_field="event_timestamp"),
)
item_stats_push = PushSource(
    name="item_stats_push",
    batch_source=FileSource(name="item_stats_file", path="offline/item_stats.parquet",
                            timestamp_field="event_timestamp"),
)

user_behaviour = FeatureView(
    name="user_behaviour",
    entities=[user],
    ttl=timedelta(days=365),
    schema=[
        Field(name="short_sids", dtype=Array(String),
              description="SIDs of the 5 latest image-search clicks, newest first ('c1-c2-...-cL')"),
        Field(name="long_sid", dtype=Array(Int64),
              description="one SID aggregated from recent clicks and orders in all scenes"),
        Field(name="recent_sids", dtype=Array(String),
              description="SIDs of the recent clicks and orders long_sid aggregates, oldest first ('c1-c2-...-cL')"),
    ],
    online=True,
    source=user_behaviour_push,
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=365),
    schema=[
        Field(name="sid", dtype=Array(Int64), description="the item's SID (L codes)"),
        Field(name="clicks_30d", dtype=Int64),
        Field(name="orders_30d", dtype=Int64),
        Field(name="gmv_30d", dtype=Float64),
        Field(name="s_conv", dtype=Float64, description="OneVision eq. 13: orders items inside a SID"),
    ],
    online=True,
    source=item_stats_push,
)
