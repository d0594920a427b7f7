"""Item stats over a sliding 30-day window and S_conv (OneVision eq. 13), kept in Redis.

Events for one item arrive from every user's partition, so several workers update the same
item. Each item therefore keeps per-day counters in a Redis hash, and one Lua script per flush
adds the batch's deltas, drops days that left the window, and rewrites the item's Feast row
(same bytes Feast writes, see `features/redis_writer.py`) from the totals — atomically, inside
the worker's MULTI with its offsets. The window ends at the item's latest event day, so the
totals depend only on which events were applied, never on their interleaving.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import redis

from features.client import ITEM_VIEW
from features.redis_writer import entity_key, field_key
from streaming.worker_config import ItemStatsConfig

DAY_MS = 86_400_000


# KEYS: per item (state hash, Feast row key). ARGV: w_clicks, w_gmv, w_orders, window_days,
# then Feast field keys (_ts, sid, clicks, orders, gmv, s_conv), then per item:
# sid Value bytes, latest ts (ms), n days, n x (day, d_clicks, d_orders, d_gmv_cents).
_LUA = """
local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = math.floor(n / 128)
    if n > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end
local function ts_bytes(ms)
  local s, ns = math.floor(ms / 1000), (ms % 1000) * 1000000
  local out = ''
  if s > 0 then out = '\\8' .. varint(s) end
  if ns > 0 then out = out .. '\\16' .. varint(ns) end
  return out
end
local wc, wg, wo, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local f_ts, f_sid, f_c, f_o, f_g, f_s = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local a = 11
for j = 1, #KEYS / 2 do
  local skey, fkey = KEYS[2 * j - 1], KEYS[2 * j]
  local sid, ts, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local last_day = tonumber(redis.call('HGET', skey, 'last_day') or '-1')
  for k = 1, n do
    local day = ARGV[a]
    redis.call('HINCRBY', skey, 'c:' .. day, ARGV[a + 1])
    redis.call('HINCRBY', skey, 'o:' .. day, ARGV[a + 2])
    redis.call('HINCRBY', skey, 'g:' .. day, ARGV[a + 3])
    if tonumber(day) > last_day then last_day = tonumber(day) end
    a = a + 4
  end
  local old_ts = tonumber(redis.call('HGET', skey, 'ts') or '0')
  if old_ts > ts then ts = old_ts end
  redis.call('HSET', skey, 'last_day', last_day, 'ts', ts)
  local c, o, g = 0, 0, 0
  local fields = redis.call('HGETALL', skey)
  for i = 1, #fields, 2 do
    local name, value = fields[i], tonumber(fields[i + 1])
    local kind, day = string.sub(name, 1, 1), tonumber(string.sub(name, 3))
    if day then
      if day <= last_day - window then
        redis.call('HDEL', skey, name)
      elseif kind == 'c' then c = c + value
      elseif kind == 'o' then o = o + value
      else g = g + value end
    end
  end
  local gmv = g / 100
  redis.call('HSET', fkey, f_ts, ts_bytes(ts), f_sid, sid,
    f_c, '\\32' .. varint(c), f_o, '\\32' .. varint(o),
    f_g, ')' .. struct.pack('<d', gmv), f_s, ')' .. struct.pack('<d', wc * c + wg * gmv + wo * o))
end
return #KEYS / 2
"""


class ItemDeltas:
    """Per-item, per-day click/order/GMV increments gathered while a batch is applied."""

    def __init__(self):
        self.days: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
        self.ts: dict[str, int] = {}

    def add(self, item_id: str, ts: int, clicks: int = 0, orders: int = 0, gmv: float = 0.0) -> None:
        d = self.days[item_id][ts // DAY_MS]
        d[0] += clicks
        d[1] += orders
        d[2] += round(gmv * 100)
        if ts > self.ts.get(item_id, -1):
            self.ts[item_id] = ts

    def checkpoint(self, item_id: str, ts: int) -> Callable[[], None]:
        """What undoes an `add(item_id, ts, ...)` that is about to happen."""
        day = ts // DAY_MS
        days = self.days.get(item_id)
        had_item, old_ts = days is not None, self.ts.get(item_id)
        old = list(days[day]) if days is not None and day in days else None

        def undo() -> None:
            if not had_item:
                self.days.pop(item_id, None)
            elif old is None:
                self.days[item_id].pop(day, None)
            else:
                self.days[item_id][day] = old
            if old_ts is None:
                self.ts.pop(item_id, None)
            else:
                self.ts[item_id] = old_ts

        return undo

    def __len__(self) -> int:
        return len(self.days)

    def clear(self) -> None:
        self.days.clear()
        self.ts.clear()


class ItemStatsStore:
    """Queues the Lua update of a batch's items on a Redis pipeline."""

    def __init__(self, client: redis.Redis, namespace: str, sid_bytes: dict[str, bytes],
                 config: ItemStatsConfig = ItemStatsConfig(), chunk: int = 500):
        self.script = client.register_script(_LUA)
        self.namespace, self.sid_bytes, self.config, self.chunk = namespace, sid_bytes, config, chunk
        c = config
        self._head = [c.w_clicks, c.w_gmv, c.w_orders, c.window_days, f"_ts:{ITEM_VIEW}".encode(),
                      *(field_key(ITEM_VIEW, f) for f in ("sid", "clicks_30d", "orders_30d", "gmv_30d", "s_conv"))]

    def state_key(self, item_id: str) -> str:
        return f"{self.namespace}:item:{item_id}"

    def queue(self, pipe, deltas: ItemDeltas) -> int:
        items = list(deltas.days)
        for start in range(0, len(items), self.chunk):
            keys, args = [], list(self._head)
            for item in items[start:start + self.chunk]:
                days = deltas.days[item]
                keys += [self.state_key(item), entity_key("item_id", item)]
                args += [self.sid_bytes[item], deltas.ts[item], len(days)]
                for day, (c, o, g) in sorted(days.items()):
                    args += [day, c, o, g]
            self.script(keys=keys, args=args, client=pipe)
        return len(items)
