"""Experiment assignment against GrowthBook's published SDK cases (spec `cases.json`: hash,
getBucketRange, chooseVariation, inNamespace) and against the growthbook Python SDK itself."""

import random

import pytest
from growthbook import core as gb
from pydantic import ValidationError

from serving.experiments import ExperimentConfig, Router, choose_variation, get_bucket_ranges, hash, in_namespace

# [seed, value, version, expected]
HASH_CASES = [
    ["", "a", 1, 0.22], ["", "b", 1, 0.077], ["b", "a", 1, 0.946], ["ef", "d", 1, 0.652],
    ["asdf", "8952klfjas09ujk", 1, 0.549], ["", "123", 1, 0.011], ["", '___)((*":&', 1, 0.563],
    ["seed", "a", 2, 0.0505], ["seed", "b", 2, 0.2696], ["foo", "ab", 2, 0.2575], ["foo", "def", 2, 0.2019],
    ["89123klj", "8952klfjas09ujkasdf", 2, 0.124], ["90850943850283058242805", "123", 2, 0.7516],
    ["()**(%$##$%#$#", '___)((*":&', 2, 0.0128], ["abc", "def", 99, None],
]
# [name, (numVariations, coverage, weights), expected ranges]
BUCKET_CASES = [
    ["normal 50/50", (2, 1, None), [(0, 0.5), (0.5, 1)]],
    ["reduced coverage", (2, 0.5, None), [(0, 0.25), (0.5, 0.75)]],
    ["zero coverage", (2, 0, None), [(0, 0), (0.5, 0.5)]],
    ["4 variations", (4, 1, None), [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]],
    ["uneven weights", (2, 1, [0.4, 0.6]), [(0, 0.4), (0.4, 1)]],
    ["uneven weights, 3 variations", (3, 1, [0.2, 0.3, 0.5]), [(0, 0.2), (0.2, 0.5), (0.5, 1)]],
    ["uneven weights, reduced coverage, 3 variations", (3, 0.2, [0.2, 0.3, 0.5]), [(0, 0.04), (0.2, 0.26), (0.5, 0.6)]],
    ["negative coverage", (2, -0.2, None), [(0, 0), (0.5, 0.5)]],
    ["coverage above 1", (2, 1.5, None), [(0, 0.5), (0.5, 1)]],
    ["weights sum below 1", (2, 1, [0.4, 0.1]), [(0, 0.5), (0.5, 1)]],
    ["weights sum above 1", (2, 1, [0.7, 0.6]), [(0, 0.5), (0.5, 1)]],
    ["weights.length not equal to num variations", (4, 1, [0.4, 0.4, 0.2]),
     [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]],
    ["weights sum almost equals 1", (2, 1, [0.4, 0.5999]), [(0, 0.4), (0.4, 0.9999)]],
]
EVEN, REDUCED = [(0, 0.5), (0.5, 1)], [(0, 0.25), (0.5, 0.75)]
CHOOSE_CASES = [
    (0.2, EVEN, 0), (0.4, EVEN, 0), (0.6, EVEN, 1), (0.8, EVEN, 1), (0, EVEN, 0), (0.5, EVEN, 1),
    (0.2, REDUCED, 0), (0.4, REDUCED, -1), (0.6, REDUCED, 1), (0.8, REDUCED, -1), (0.25, REDUCED, -1),
    (0.5, REDUCED, 1), (0.5, [(0, 0.5), (0.5, 0.5), (0.5, 1)], 2),
]
# (user, namespace, expected): users 1-4 in namespace1/namespace2, ranges [0, 0.4) and [0.4, 1)
NAMESPACE_CASES = [
    (user, (ns, *rng), expected)
    for user, per_ns in {"1": ((False, True), (False, True)), "2": ((False, True), (False, True)),
                         "3": ((False, True), (True, False)), "4": ((False, True), (True, False))}.items()
    for ns, outcome in zip(("namespace1", "namespace2"), per_ns)
    for rng, expected in zip(((0, 0.4), (0.4, 1)), outcome)
]


@pytest.mark.parametrize("seed,value,version,expected", HASH_CASES)
def test_hash_matches_published_cases(seed, value, version, expected):
    assert hash(seed, value, version) == expected


@pytest.mark.parametrize("name,args,expected", BUCKET_CASES, ids=[c[0] for c in BUCKET_CASES])
def test_bucket_ranges_match_published_cases(name, args, expected):
    got = get_bucket_ranges(*args)
    assert len(got) == len(expected)
    for (a, b), (c, d) in zip(got, expected):
        assert a == pytest.approx(c, abs=1e-9) and b == pytest.approx(d, abs=1e-9)


@pytest.mark.parametrize("n,ranges,expected", CHOOSE_CASES)
def test_choose_variation_matches_published_cases(n, ranges, expected):
    assert choose_variation(n, ranges) == expected


@pytest.mark.parametrize("user,namespace,expected", NAMESPACE_CASES)
def test_in_namespace_matches_published_cases(user, namespace, expected):
    assert in_namespace(user, namespace) is expected


def test_agrees_with_the_growthbook_sdk_on_random_inputs():
    rng = random.Random(0)
    alphabet = "abcXYZ0189_-:@ éü中😀"
    for _ in range(2000):
        seed = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        for version in (1, 2):
            assert hash(seed, value, version) == gb.gbhash(seed, value, version)
        ns = (seed, rng.random() / 2, 0.5 + rng.random() / 2)
        assert in_namespace(value, ns) == gb.inNamespace(value, ns)
    for _ in range(500):
        n = rng.randint(1, 5)
        weights = [rng.random() for _ in range(n)]
        weights = [w / sum(weights) for w in weights] if rng.random() < 0.7 else weights
        coverage = rng.uniform(-0.2, 1.2)
        ours, theirs = get_bucket_ranges(n, coverage, weights), gb.getBucketRanges(n, coverage, weights)
        assert [x for r in ours for x in r] == [x for r in theirs for x in r]
        x = rng.random()
        assert choose_variation(x, ours) == gb.chooseVariation(x, theirs)


def config(**extra) -> ExperimentConfig:
    base = {
        "default_variant": "mca",
        "variants": [{"name": "mca", "method": "mca"}, {"name": "onevision", "method": "onevision"},
                     {"name": "mca-no-ranking", "method": "mca-no-ranking"}],
        "layers": [{"name": "search-model", "experiments": [
            {"key": "ov-vs-mca", "variants": ["mca", "onevision", "mca-no-ranking"], "namespace": [0.0, 0.5]},
            {"key": "ov-only", "variants": ["onevision"], "coverage": 0.5, "namespace": [0.5, 1.0]}]}],
    }
    return ExperimentConfig.model_validate({**base, **extra})


def test_router_assigns_deterministically_and_in_proportion():
    router = Router(config())
    users = [f"u{i}" for i in range(6000)]
    first = [router.assign(u) for u in users]
    assert first == [router.assign(u) for u in users]
    in_a = [a for a in first if a.experiment == "ov-vs-mca"]
    assert abs(len(in_a) / len(users) - 0.5) < 0.03  # its half of the layer
    for name in ("mca", "onevision", "mca-no-ranking"):
        assert abs(sum(a.variant == name for a in in_a) / len(in_a) - 1 / 3) < 0.03
    in_b = [a for a in first if a.experiment == "ov-only"]
    assert abs(len(in_b) / len(users) - 0.25) < 0.03  # half the layer at 50% coverage
    rest = [a for a in first if not a.experiment]
    assert rest and all(a.variant == "mca" and a.reason == "default" for a in rest)
    for a, u in zip(first, users):  # same bucket GrowthBook would compute
        if a.experiment == "ov-vs-mca":
            assert a.bucket == gb.gbhash("ov-vs-mca", u, 2)


def test_request_level_randomization_splits_each_users_requests():
    cfg = config()
    cfg.layers[0].experiments[0].hash_attribute = "request_id"
    router = Router(cfg)
    by_user = [router.assign("u1") for _ in range(3)]
    assert len({a.variant for a in by_user}) == 1  # without a request id it falls back to the user
    got = [router.assign("u1", f"r{i}") for i in range(3000)]
    assert got == [router.assign("u1", f"r{i}") for i in range(3000)]  # deterministic per request
    in_a = [a for a in got if a.experiment == "ov-vs-mca"]
    assert abs(len(in_a) / 3000 - 0.5) < 0.04
    assert all(abs(sum(a.variant == v for a in in_a) / len(in_a) - 1 / 3) < 0.05
               for v in ("mca", "onevision", "mca-no-ranking"))
    assert all(a.bucket == gb.gbhash("ov-vs-mca", f"r{i}", 2) for i, a in enumerate(got) if a.experiment == "ov-vs-mca")


def test_forced_and_holdout_users_skip_experiments():
    router = Router(config(forced={"qa-1": "mca-no-ranking"}, holdout={"seed": "h", "share": 0.1}))
    assert router.assign("qa-1").variant == "mca-no-ranking" and router.assign("qa-1").reason == "forced"
    held = [u for u in (f"u{i}" for i in range(3000)) if router.assign(u).reason == "holdout"]
    assert abs(len(held) / 3000 - 0.1) < 0.02
    assert all(router.assign(u).variant == "mca" and not router.assign(u).experiment for u in held)


def test_bad_configs_are_refused_with_a_reason():
    with pytest.raises(ValidationError, match="unknown variants"):
        config(forced={"qa": "nope"})
    with pytest.raises(ValidationError, match="overlap"):
        config(layers=[{"name": "l", "experiments": [{"key": "a", "variants": ["mca"], "namespace": [0, 0.6]},
                                                      {"key": "b", "variants": ["mca"], "namespace": [0.5, 1]}]}])
    with pytest.raises(ValidationError, match="weights"):
        config(layers=[{"name": "l", "experiments": [{"key": "a", "variants": ["mca"], "weights": [0.5, 0.5]}]}])
