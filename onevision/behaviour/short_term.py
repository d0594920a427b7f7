"""Short-term behaviour: the items of the user's 5 latest clicks in the image-search scene,
newest first (OneVision 3.2.3). Events can arrive slightly out of time order; the list is kept
sorted by event time, ties in arrival order."""

from __future__ import annotations

SHORT_LEN = 5  # OneVision 3.2.3: the last five image-search clicks
SCENE = "image_search"
# clicks that count: the image-search scene, and a log's clicks of unknown scene (a team's log that
# names none is taken to be image search, offline and online alike)
SHORT_SCENES = (SCENE, "unknown")


def add_click(short: list[tuple[int, str]], ts: int, item_id: str, size: int = SHORT_LEN) -> None:
    """Insert one click into the newest-first list and keep the latest `size`."""
    pos = 0
    while pos < len(short) and short[pos][0] > ts:
        pos += 1
    short.insert(pos, (ts, item_id))
    del short[size:]


def short_items(short: list[tuple[int, str]]) -> list[str]:
    return [item for _, item in short]
