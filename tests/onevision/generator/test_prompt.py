"""The encoder prompt: one fixed layout, empty user slots for cold start, titles as word tokens."""

import numpy as np

from onevision.generator.prompt import SHORT_LEN, PromptTokens, build_prompts
from onevision.generator.vocab import BOS, EOS, MASK, PAD, SEP

SIZES = (8, 4, 4)


def tokens():
    return PromptTokens.from_catalog(SIZES, ["shoes", "bags"], ["Red leather shoe", "blue bag", "red bag"], n_visual=5)


def test_layout_positions_and_cold_start():
    t = tokens()
    long_sid = np.array([[1, 2, 3], [-1, -1, -1]])
    short = np.full((2, SHORT_LEN, 3), -1)
    short[0, 0] = [7, 3, 0]
    p = build_prompts(t, np.zeros((2, 4, 320)), np.zeros((2, 256)), t.scene_ids(["image_search", "nowhere"]),
                      long_sid, short, t.title_ids(["red bag", ""]), np.array([[2, 1, 0], [-1, -1, -1]]))
    ids, L = p.ids.numpy(), 3
    assert ids.shape == (2, t.length) and t.length == 1 + 1 + L + 1 + SHORT_LEN * L + 1 + t.title_len + 1 + L + 1 + 5 + 1
    assert (ids[:, 0] == BOS).all() and (ids[:, -1] == EOS).all()
    assert ids[0, 1] == t.scene_offset and ids[1, 1] == t.scene_offset + t.scenes.index("unknown")
    vocab = t.vocab
    assert (ids[0, 2:2 + L] == vocab.tokens(np.array([1, 2, 3]))).all()
    assert (ids[1, 2:2 + L] == PAD).all() and (p.mask[1, 2:2 + L] == 0).all()  # cold start: empty, masked
    assert ids[0, 2 + L] == SEP
    assert (ids[0, 3 + L:3 + 2 * L] == vocab.tokens(np.array([7, 3, 0]))).all()
    assert (ids[0, 3 + 2 * L:3 + SHORT_LEN * L + L] == PAD).all()
    assert (ids[:, t.visual_start:-1] == MASK).all()
    assert (ids[0, t.visual_start - 1 - L:t.visual_start - 1] == vocab.tokens(np.array([2, 1, 0]))).all()
    assert (ids[1, t.visual_start - 1 - L:t.visual_start - 1] == PAD).all()
    assert ids[0, t.visual_start - 1] == SEP and ids[0, t.visual_start - 2 - L] == SEP
    title = ids[0, t.visual_start - 2 - L - t.title_len:t.visual_start - 2 - L]
    assert [t.words[i - t.word_offset] for i in title if i != PAD] == ["red", "bag"]


def test_config_round_trip_and_unknown_category():
    t = tokens()
    assert PromptTokens.from_config(t.config()) == t
    assert t.category_index(["bags", "shoes"]).tolist() == [0, 1]
    try:
        t.category_index(["hats"])
    except ValueError as exc:
        assert "hats" in str(exc)
    else:
        raise AssertionError("an unknown category must be refused")
