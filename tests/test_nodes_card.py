"""What a saved model records: the resolved graph (vars and --set applied, plugin versions) and a
model card with base_model, the method and every parameter."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml
from helpers import TINY_TIES_GRAPH as GRAPH

from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "models" / "tiny"


def test_saved_graph_is_the_resolved_graph_and_reruns(tmp_path):
    out = tmp_path / "out"
    first = run_graph(text=GRAPH, overrides={"out": str(out), "density": 0.7}, cache_dir=tmp_path / "cache")
    text = (out / "graph.yaml").read_text()
    doc = yaml.safe_load(text)
    assert doc["nodes"]["merged"]["models"]["add"]["density"] == 0.7  # --set applied, not the default
    assert doc["nodes"]["base"]["path"] == str(TINY / "base")
    assert "${" not in text and "# node types: load 1, merge 1, save 1" in text
    assert "# merge methods: ties 1" in text
    versions = json.loads((out / "graphmerge.json").read_text())["versions"]
    assert versions["merge_methods"] == {"ties": "1"}
    # Rerunning the saved graph plans the very same model (same Merkle root): its save finds the
    # output current. The unresolved graph without --set would plan another one.
    again = run_graph(out / "graph.yaml", cache_dir=tmp_path / "cache2")
    assert again.stats.outputs == []
    assert again.values["save"]["model_key"] == first.values["save"]["model_key"]
    default = run_graph(text=GRAPH, overrides={"out": str(tmp_path / "d")}, cache_dir=tmp_path / "cache")
    assert default.values["save"]["model_key"] != first.values["save"]["model_key"]


def test_plugin_versions_are_recorded(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        textwrap.dedent(
            """
            from graphmerge.registry import node
            from graphmerge.params import NodeParams

            class P(NodeParams):
                input: str

            @node("identity_i16", version="7", params=P, inputs=["input"])
            def identity(ctx, params, inputs):
                return inputs[params.input]
            """
        )
    )
    from graphmerge.registry import load_plugin

    load_plugin(str(plugin))
    graph = GRAPH.replace("input: merged,", "input: same,") + "  same: {op: identity_i16, input: merged}\n"
    out = tmp_path / "out"
    run_graph(text=graph, overrides={"out": str(out)}, cache_dir=tmp_path / "cache")
    text = (out / "graph.yaml").read_text()
    assert f"identity_i16 7 (plugin {plugin})" in text


def test_model_card_names_hub_cache_sources_by_their_id(tmp_path):
    from huggingface_hub import ModelCard

    snapshot = tmp_path / "hub" / "models--org--tiny-base" / "snapshots" / "0123abc"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(TINY / "base")
    graph = GRAPH.replace(f"path: {TINY / 'base'}", f"path: {snapshot}")
    out = tmp_path / "out"
    run_graph(text=graph, overrides={"out": str(out)}, cache_dir=tmp_path / "cache")
    assert ModelCard.load(out / "README.md").data.base_model[0] == "org/tiny-base"


def test_model_card_has_base_model_method_and_every_parameter(tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "out"
    run_graph(text=GRAPH, overrides={"out": str(out), "density": 0.7}, cache_dir=tmp_path / "cache")
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == [str(TINY / n) for n in ("base", "add", "reverse")]
    assert "ties" in card.data.tags and card.data.library_name == "transformers"
    steps = yaml.safe_load(card.text.split("```yaml\n", 1)[1].split("```", 1)[0])
    merged = steps["merged"]
    assert merged["method"] == "ties" and merged["base"] == "base"
    assert merged["models"]["add"] == {"weight": 1.0, "density": 0.7}
    from graphmerge.methods import get_method

    assert set(merged["params"]) == set(get_method("ties").global_params)  # defaults included
    assert merged["params"]["lambda"] == 1.0
