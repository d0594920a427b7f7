"""The encoder prompt: one fixed layout, empty user slots for cold start, titles as word tokens."""

import numpy as np

from onevision.behaviour.short_term import SHORT_LEN
from onevision.generator.prompt.builder import PromptInputs, PromptTokens, build_prompts
from onevision.generator.prompt.vocab import BOS, EOS, MASK, PAD, SEP

SIZES = (8, 4, 4)


def tokens():
    return PromptTokens.from_catalog(SIZES, ["shoes", "bags"], ["Red leather shoe", "blue bag", "red bag"], n_visual=5)


def test_layout_positions_and_cold_start():
    t = tokens()
    long_sid = np.array([[1, 2, 3], [-1, -1, -1]])
    short = np.full((2, SHORT_LEN, 3), -1)
    short[0, 0] = [7, 3, 0]
    p = build_prompts(t, PromptInputs(np.zeros((2, 4, 320)), np.zeros((2, 256)),
                                      t.scene_ids(["image_search", "nowhere"]), long_sid, short,
                                      t.title_ids(["red bag", ""]), np.array([[2, 1, 0], [-1, -1, -1]])))
    ids, L = p.ids.numpy(), 3
    assert (ids.shape == (2, t.length)
            and t.length == 1 + 1 + L + 1 + SHORT_LEN * L + 1 + t.title_len + 1 + L + 1 + 5 + 1)
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
    assert (p.short_sids == short).all() and (p[1:].short_sids == -1).all()  # the codes, for the searcher's price term
    assert (p.slots[:, 0].numpy() == long_sid).all() and (p.slots[0, -1].numpy() == [2, 1, 0]).all()
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


def test_hint_similarities_reach_only_the_hint_tokens():
    import torch

    from onevision.generator.model import OneVisionGenerator

    t = PromptTokens.from_catalog(SIZES, ["shoes", "bags"], ["red shoe"], n_visual=5, n_hints=2)
    hints = np.array([[[2, 1, 0], [3, 0, 1]]])
    p = build_prompts(t, PromptInputs(np.zeros((1, 4, 320)), np.zeros((1, 256)), t.scene_ids(["image_search"]),
                                      image_sid=hints, hint_similarity=np.array([[0.9, 0.7]])))
    assert p.hint_similarity.tolist() == [[np.float32(0.9), np.float32(0.7)]]
    assert (p.ids[0, t.hint_start:t.hint_start + 3].numpy() == t.vocab.tokens(np.array([2, 1, 0]))).all()
    torch.manual_seed(0)
    model = OneVisionGenerator(t, "tiny")
    x, _ = model.embed(p)
    closer = p[:]
    closer.hint_similarity = torch.tensor([[0.9, 0.85]])
    y, _ = model.embed(closer)
    changed = (x - y).abs().sum(-1)[0] > 0
    assert changed[t.hint_start + 3:t.hint_start + 2 * 3].all() and changed.sum() == 3  # the second hint's tokens
    # a model saved before hint similarities existed loads without the projection
    old = {k: v for k, v in t.config().items() if k != "hint_similarity"}
    assert OneVisionGenerator(PromptTokens.from_config(old), "tiny").hint_proj is None


def test_sid_slots_carry_their_items_embedding():
    import torch

    from onevision.generator.model import OneVisionGenerator
    from onevision.generator.prompt.sid_content import SIDContent

    item_sids = np.array([[2, 1, 0], [3, 0, 1], [3, 0, 1]])
    emb = np.eye(3, 256, dtype=np.float32)
    content = SIDContent.from_item_sids(item_sids, emb)
    looked = content.lookup(np.array([[2, 1, 0], [3, 0, 1], [-1, -1, -1], [7, 3, 3]]))
    assert np.allclose(looked[0], emb[0]) and np.allclose(looked[1], (emb[1] + emb[2]) / np.sqrt(2))
    assert not looked[2:].any()  # missing and non-catalog SIDs: zeros
    t = PromptTokens.from_catalog(SIZES, ["shoes"], ["red shoe"], n_visual=5, n_hints=1)
    short = np.full((1, SHORT_LEN, 3), -1)
    short[0, 0] = [3, 0, 1]
    p = build_prompts(t, PromptInputs(np.zeros((1, 4, 320)), np.zeros((1, 256)), t.scene_ids(["image_search"]),
                                      np.array([[2, 1, 0]]), short, image_sid=np.array([[[2, 1, 0]]])), content)
    assert p.sid_content.shape == (1, 1 + SHORT_LEN + 1, 256)
    assert np.allclose(p.sid_content[0, 0], emb[0]) and np.allclose(p.sid_content[0, 6], emb[0])
    assert np.allclose(p.sid_content[0, 1], looked[1]) and not p.sid_content[0, 2:6].any()
    assert (p.ids[0, t.sid_slots[1]].numpy() == t.vocab.tokens(np.array([3, 0, 1]))).all()
    torch.manual_seed(0)
    model = OneVisionGenerator(t, "tiny")
    x, _ = model.embed(p)
    other = p[:]
    other.sid_content = p.sid_content.clone()
    other.sid_content[0, 1] = torch.from_numpy(emb[0])
    y, _ = model.embed(other)
    changed = ((x - y).abs().sum(-1)[0] > 0).nonzero().reshape(-1).tolist()
    assert changed == t.sid_slots[1].tolist()  # only the first short-term slot's tokens


def test_training_leaves_out_positions_empty_in_the_whole_batch_and_scores_the_same():
    """A training batch of cold-start prompts without titles runs the encoder on fewer positions
    (each kept one with its own position embedding), and scores SIDs as the full layout does."""
    import torch

    from onevision.generator.model import OneVisionGenerator

    t = PromptTokens.from_catalog(SIZES, ["shoes", "bags"], ["red shoe", "blue bag"], n_visual=5, n_hints=1)
    g = torch.Generator().manual_seed(0)
    p = build_prompts(t, PromptInputs(torch.randn(3, 4, 320, generator=g).numpy(),
                                      torch.randn(3, 256, generator=g).numpy(),
                                      t.scene_ids(["image_search"] * 3), image_sid=np.array([[[2, 1, 0]]] * 3)))
    torch.manual_seed(0)
    model = OneVisionGenerator(t, "tiny", visual_keep=3)
    for m in model.modules():  # no dropout, so train and eval mode compute the same function
        if isinstance(getattr(m, "dropout", None), float):
            m.dropout = 0.0
    sids = torch.tensor([[2, 1, 0], [3, 0, 1], [0, 0, 0]])
    full = model.eval().sid_logprob(p, sids)
    enc_full, _ = model.encode(p)
    trimmed = model.train().sid_logprob(p, sids)
    enc_trim, mask = model.encode(p)
    empty = int((~p.mask.bool()).all(0).sum())  # long- and short-term slots, the title
    assert empty > 0 and enc_trim.shape[1] == enc_full.shape[1] - empty and bool(mask.all())
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)


def test_the_mixed_precision_path_runs_and_scores_like_float32():
    """Autocast (bf16) is what a GPU trains under; CPU autocast runs the same code path, so a
    dtype clash between a bf16 projection and the float32 token table shows here too."""
    import torch

    from onevision.generator.model import OneVisionGenerator

    t = PromptTokens.from_catalog(SIZES, ["shoes"], ["red shoe"], n_visual=5, n_hints=1)
    short = np.full((2, SHORT_LEN, 3), -1)
    short[0, 0] = [3, 0, 1]
    g = torch.Generator().manual_seed(0)
    grid, emb = torch.randn(2, 4, 320, generator=g).numpy(), torch.randn(2, 256, generator=g).numpy()
    p = build_prompts(t, PromptInputs(grid, emb, t.scene_ids(["image_search"] * 2), np.array([[2, 1, 0], [-1, -1, -1]]),
                                      short, image_sid=np.array([[[2, 1, 0]], [[3, 0, 1]]])))
    torch.manual_seed(0)
    model = OneVisionGenerator(t, "tiny").eval()
    sids = torch.tensor([[2, 1, 0], [3, 0, 1]])
    full = model.sid_logprob(p, sids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.sid_logprob(p, sids)
    torch.testing.assert_close(mixed.float(), full, rtol=0.05, atol=0.1)
