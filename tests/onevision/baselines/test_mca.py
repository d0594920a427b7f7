"""The MCA cascade: recall + pre-rank keep ANN's neighbours, and the learned ranker learns what
the features say (here: shoppers pick, among near duplicates, the one nearest their history)."""

import numpy as np

from onevision.baselines.mca import MCACascade, MCAConfig, UserArrays


def world(seed=0, n_fam=60, fam=4, d=16):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_fam, d))
    emb = np.repeat(centres, fam, 0) + 0.15 * rng.standard_normal((n_fam * fam, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    stats = rng.integers(0, 20, (len(emb), 3)).astype(float)
    return emb.astype(np.float32), stats, rng.uniform(5, 50, len(emb))


def requests(emb, rng, n=400, fam=4):
    fams = rng.integers(0, len(emb) // fam, n)
    target = fams * fam + rng.integers(0, fam, n)
    query = emb[fams * fam] + 0.05 * rng.standard_normal((n, emb.shape[1]))  # a photo of the family's first member
    query = (query / np.linalg.norm(query, axis=1, keepdims=True)).astype(np.float32)
    short = np.full((n, 5), -1)
    short[:, 0] = target  # the shopper looked at the target before
    return query, UserArrays(short, [np.array([t]) for t in target]), target


def test_ranker_learns_personal_preference_and_beats_prerank():
    emb, stats, price = world()
    rng = np.random.default_rng(1)
    mca = MCACascade(emb, stats, price, MCAConfig(recall=50, prerank=20, epochs=20))
    q, users, target = requests(emb, rng)
    fit = mca.fit(q, users, target)
    assert fit["recall_hit_share"] > 0.95
    tq, tusers, ttarget = requests(emb, rng, n=200)
    ranked = mca.rank(tq, tusers, k=4)
    plain = mca.rank(tq, None, k=4, ranking=False)
    assert (ranked[:, 0] == ttarget).mean() > 0.9
    assert (plain[:, 0] == ttarget).mean() < 0.6
    assert ranked.shape == (200, 4) and (mca.rank(tq, None, k=4) >= 0).all()  # cold start still answers
