"""Strategies: space sizes and conditions, trial subgraph shapes, feasibility, fixed-config validation."""

from __future__ import annotations

import pytest

from graphmerge.errors import SpecError
from graphmerge.search.sampling import sample_configs
from graphmerge.strategies import STRATEGIES, ModelInfo, get_strategy, parse_settings
from graphmerge.strategies import dis as dis_mod
from graphmerge.strategies import prune as prune_mod

MODELS = ["wiz", "math", "code"]
INFO = ModelInfo({"wiz": 8, "math": 8, "code": 8, "base": 8})


def space_and_settings(name, **settings):
    s = parse_settings(name, {"models": MODELS, "base": "base", **settings})
    return get_strategy(name).build_space(s, INFO), s


def sample(cs, n=10):
    return sample_configs(cs, n, seed=0)


def test_registry():
    assert set(STRATEGIES) == {"lfs", "lfs_mo", "dis", "prune"}
    with pytest.raises(SpecError, match="unknown strategy"):
        get_strategy("nope")


# ----------------------------------------------------------------------------------------------- lfs


def test_lfs_space_conditions_and_nodes():
    cs, s = space_and_settings("lfs", layer_granularity=4, embed="average")
    # per group: method + 3 sets x (3 linear weights + ta lambda + ties density, lambda + slerp t) + slerp pair
    assert len(cs) == 2 * (1 + 3 * 7 + 1) == 46
    for cfg in sample(cs):
        for g in range(2):
            method = cfg[f"g{g}_method"]
            active = [k for k in cfg if k.startswith(f"g{g}_") and k != f"g{g}_method"]
            assert active and all(f"_{method}_" in k for k in active)  # only the chosen method's params
        nodes = get_strategy("lfs").trial_nodes(cfg, s, INFO)
        model = nodes["model"]
        assert model["op"] == "slice" and model["embed_from"] == "embed" and nodes["embed"]["op"] == "merge"
        assert [sl["layers"] for sl in model["slices"]] == [[0, 4], [4, 8]]
        for g, sl in enumerate(model["slices"]):
            spec = sl["merge"]
            assert spec["method"] == cfg[f"g{g}_method"]
            if spec["method"] in ("task_arithmetic", "ties"):
                assert spec["base"] == "base" and set(spec["models"]) == set(MODELS)
            if spec["method"] == "slerp":
                assert (
                    len(spec["models"]) == 1 and spec["base"] in MODELS and spec["base"] not in spec["models"]
                )
                t = spec["params"]["t"]
                assert [e.get("filter") for e in t] == ["*self_attn*", "*mlp*", None]
            if spec["method"] == "linear":
                assert set(spec["models"]) == set(MODELS)


def test_lfs_searched_embed_makes_initial_configs_the_exact_sources():
    cs, s = space_and_settings("lfs", layer_granularity=4)
    assert len(cs) == 46 + 1 and "embed" in cs
    for cfg, source in zip(get_strategy("lfs").initial_configs(s, INFO), MODELS):
        nodes = get_strategy("lfs").trial_nodes(cfg, s, INFO)
        assert "embed" not in nodes and nodes["model"]["embed_from"] == source
        for sl in nodes["model"]["slices"]:
            weights = {m: spec["weight"] for m, spec in sl["merge"]["models"].items()}
            assert weights == {
                m: [
                    {"filter": "*self_attn*", "value": float(m == source)},
                    {"filter": "*mlp*", "value": float(m == source)},
                    {"value": float(m == source)},
                ]
                for m in MODELS
            }


def test_lfs_uneven_groups_single_set_and_initial_configs():
    cs, s = space_and_settings(
        "lfs", layer_granularity=3, param_sets={}, methods=["linear", "slerp"], embed="base"
    )
    assert len(cs) == 3 * (1 + 3 + 1 + 1)
    inits = get_strategy("lfs").initial_configs(s, INFO)
    assert len(inits) == 3
    nodes = get_strategy("lfs").trial_nodes(inits[1], s, INFO)
    assert "embed" not in nodes and nodes["model"]["embed_from"] == "base"
    assert [sl["layers"] for sl in nodes["model"]["slices"]] == [[0, 3], [3, 6], [6, 8]]
    weights = nodes["model"]["slices"][0]["merge"]["models"]
    assert weights == {"wiz": {"weight": 0.0}, "math": {"weight": 1.0}, "code": {"weight": 0.0}}


def test_lfs_settings_errors():
    with pytest.raises(SpecError, match="need `base`"):
        parse_settings("lfs", {"models": MODELS})
    with pytest.raises(SpecError, match="layer_granularity"):
        parse_settings("lfs", {"models": MODELS, "base": "base", "layer_granularity": 0})
    with pytest.raises(SpecError, match="unknown key"):
        parse_settings("lfs", {"models": MODELS, "base": "base", "granularity": 2})
    s = parse_settings("lfs", {"models": MODELS, "base": "base"})
    with pytest.raises(SpecError, match="same number of layers"):
        get_strategy("lfs").build_space(s, ModelInfo({"wiz": 8, "math": 6, "code": 8, "base": 8}))


def test_lfs_mo_shares_lfs():
    cs_lfs, s = space_and_settings("lfs", layer_granularity=4)
    cs_mo, s_mo = space_and_settings("lfs_mo", layer_granularity=4)
    assert list(cs_lfs.keys()) == list(cs_mo.keys())
    cfg = sample_configs(cs_lfs, 1, seed=0)[0]
    assert get_strategy("lfs").trial_nodes(cfg, s, INFO) == get_strategy("lfs_mo").trial_nodes(
        cfg, s_mo, INFO
    )


# ----------------------------------------------------------------------------------------------- dis


def test_dis_space_and_nodes():
    cs, s = space_and_settings("dis", fix_layers=1, max_layers=12, ends="base")
    assert len(cs) == 6 * (3 + 1 + 1)  # 6 searchable positions: 3 use flags, order, scale
    strat = get_strategy("dis")
    for cfg in sample(cs, 20):
        for i in range(1, 7):
            n_used = sum(cfg[f"layer{i}_use_{m}"] for m in MODELS)
            assert (f"layer{i}_order" in cfg) == (n_used >= 2)
        slices = strat.trial_nodes(cfg, s, INFO)["model"]["slices"]
        assert slices[0] == {"model": "base", "layers": [0, 1], "scale": 1.0}
        assert slices[-1] == {"model": "base", "layers": [7, 8], "scale": 1.0}
        assert all(sl["layers"][1] == sl["layers"][0] + 1 for sl in slices)
        assert strat.is_feasible(cfg, s, INFO) == (len(slices) <= 12)


def test_dis_order_scale_remain_base_and_infeasible():
    cs, s = space_and_settings("dis", fix_layers=1, max_layers=8, ends="base")
    cfg = {}
    for i in range(1, 7):
        cfg.update({f"layer{i}_use_{m}": 0 for m in MODELS}, **{f"layer{i}_scale": 1.0})
    cfg.update(
        {"layer2_use_code": 1, "layer2_use_wiz": 1, "layer2_order": "code,math,wiz", "layer2_scale": 0.5}
    )
    slices = get_strategy("dis").trial_nodes(cfg, s, INFO)["model"]["slices"]
    at2 = [sl for sl in slices if sl["layers"] == [2, 3]]
    assert at2 == [
        {"model": "code", "layers": [2, 3], "scale": 1.0},
        {"model": "wiz", "layers": [2, 3], "scale": 0.5},
    ]
    assert [sl["model"] for sl in slices if sl["layers"] == [3, 4]] == ["base"]  # remain_base fallback
    assert dis_mod.depth(cfg, s, INFO) == 9 and not dis_mod.is_feasible(cfg, s, INFO)

    s2 = parse_settings(
        "dis", {"models": MODELS, "base": "base", "fix_layers": 1, "remain_base": False, "ends": "base"}
    )
    assert dis_mod.depth(cfg, s2, INFO) == 4  # empty positions are dropped without remain_base
    inits = get_strategy("dis").initial_configs(s, INFO)
    assert len(inits) == 3
    only_math = get_strategy("dis").trial_nodes(inits[1], s, INFO)["model"]["slices"]
    assert [sl["model"] for sl in only_math] == ["base"] + ["math"] * 6 + ["base"]


def test_dis_searched_ends_make_initial_design_hold_every_source_exactly():
    cs, s = space_and_settings("dis", fix_layers=1)
    assert len(cs) == 6 * 5 + 1  # plus the `ends` choice
    inits = get_strategy("dis").initial_configs(s, INFO)
    assert len(inits) == 1 + len(MODELS)  # the base alone, then each model alone
    for cfg, source in zip(inits, ["base", *MODELS]):
        node = get_strategy("dis").trial_nodes(cfg, s, INFO)["model"]
        assert node["embed_from"] == source
        assert [sl["model"] for sl in node["slices"]] == [source] * 8
        assert all(sl["scale"] == 1.0 for sl in node["slices"])


# ----------------------------------------------------------------------------------------------- prune


@pytest.mark.parametrize("k", [1, 2, 4])
def test_prune_removes_exactly_k(k):
    cs, s = space_and_settings("prune", remove=k)
    assert len(cs) == k
    for cfg in sample(cs, 25):
        removed = get_strategy("prune").trial_nodes(cfg, s, INFO)["model"]["remove"]
        assert len(removed) == k == len(set(removed))  # duplicates in the slots are repaired
        assert all(1 <= i <= 6 for i in removed)  # first/last layers are fixed


def test_prune_with_replacement_and_target_layers():
    cs, s = space_and_settings("prune", target_layers=6, replace=True)
    assert len(cs) == 2 + 6 * (3 + 1)
    strat = get_strategy("prune")
    for cfg in sample(cs, 15):
        nodes = strat.trial_nodes(cfg, s, INFO)
        removed = prune_mod.removed_layers(cfg, s, INFO)
        for i in range(1, 7):
            assert (f"layer{i}_lambda" in cfg) == any(cfg[f"layer{i}_use_{m}"] for m in MODELS)
        if "replaced" in nodes:
            assert nodes["model"] == {"op": "prune", "input": "replaced", "remove": removed}
            slices = nodes["replaced"]["slices"]
            covered = [i for sl in slices for i in range(*sl["layers"])]
            assert covered == list(range(8))
            for sl in slices:
                if "merge" in sl:
                    assert sl["layers"][0] not in removed and sl["merge"]["method"] == "task_arithmetic"
        else:
            assert nodes["model"] == {"op": "prune", "input": "base", "remove": removed}
    for cfg in strat.initial_configs(s, INFO):
        assert strat.trial_nodes(cfg, s, INFO)["model"]["input"] == "base"


def test_prune_settings_errors():
    with pytest.raises(SpecError, match="exactly one"):
        parse_settings("prune", {"base": "base"})
    s = parse_settings("prune", {"base": "base", "remove": 7})
    with pytest.raises(SpecError, match="only 6 of 8"):
        get_strategy("prune").build_space(s, INFO)


# ----------------------------------------------------------------------------------------------- fixed config


def test_fixed_config_validation_names_the_key():
    cs, s = space_and_settings("lfs", layer_granularity=4)
    strat = get_strategy("lfs")
    good = strat.initial_configs(s, INFO)[0]
    strat.trial_nodes(good, s, INFO)
    with pytest.raises(SpecError, match="unknown parameter `g9_method`"):
        strat.trial_nodes({**good, "g9_method": "linear"}, s, INFO)
    with pytest.raises(SpecError, match="g0_method"):
        strat.trial_nodes({**good, "g0_method": "dare"}, s, INFO)
    with pytest.raises(SpecError, match="missing value for active parameter `g0_attn_ties_density`"):
        strat.trial_nodes({**good, "g0_method": "ties"}, s, INFO)
    with pytest.raises(SpecError, match="g1_other_linear_wiz"):
        strat.trial_nodes({**good, "g1_other_linear_wiz": 3.0}, s, INFO)
    # Values of inactive parameters (full config files list every parameter) are ignored.
    extra = {**good, "g0_attn_slerp_t": 0.3}
    assert strat.trial_nodes(extra, s, INFO) == strat.trial_nodes(good, s, INFO)
