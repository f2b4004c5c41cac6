"""lm-eval's options through graphmerge (filters, stderr, generation settings, fractions, results
JSON), the per-example score cache, the resident model and the thread setting, on the tiny models."""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from graphmerge.errors import EvaluationError  # noqa: E402
from graphmerge.evaluation import (  # noqa: E402
    EvalOptions,
    TaskSpec,
    build_model,
    evaluate,
    resident_model,
    score_examples,
)

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "graphs" / "tasks"
MODELS = REPO / "models" / "tiny"


def _tensors(name: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    folder = MODELS / name
    return json.loads((folder / "config.json").read_text()), load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def base_model():
    config, tensors = _tensors("base")
    return build_model(config, tensors)


def _rows(result, task):
    return [(s["doc_id"], s["filter"], s["filtered_resps"]) for s in result.raw["samples"][task]]


# ------------------------------------------------------------------------------ per-example cache
def test_examples_added_to_a_prefix_equal_a_whole_run(base_model):
    specs = [
        TaskSpec("tiny_add", "exact_match"),
        TaskSpec("tiny_reverse", "exact_match"),
        TaskSpec("tiny_add_mc", "acc"),
    ]
    whole = evaluate(base_model, MODELS / "base", specs, TASKS, limit=50)
    first = score_examples(base_model, MODELS / "base", specs, TASKS, {}, EvalOptions(limit=25))
    assert all(len(v) == 25 for v in first.new_items.values())
    more = score_examples(base_model, MODELS / "base", specs, TASKS, first.new_items, EvalOptions(limit=50))
    # only the 25 new examples ran, and the assembled score is the whole run's, exactly
    assert {t: sorted(v) for t, v in more.new_items.items()} == {s.task: list(range(25, 50)) for s in specs}
    assert more.scores == whole.scores
    assert more.counts == {s.task: 50 for s in specs}
    # the 25-example score also equals lm-eval's own limit=25 run
    assert first.scores == evaluate(base_model, MODELS / "base", specs, TASKS, limit=25).scores


def test_nothing_to_run_needs_no_model():
    specs = [TaskSpec("tiny_add", "exact_match")]
    known = {"tiny_add": {i: float(i % 2) for i in range(30)}}

    def no_model():
        raise AssertionError("the model was built although every example was known")

    got = score_examples(no_model, MODELS / "base", specs, TASKS, known, EvalOptions(limit=20))
    assert got.scores == {"tiny_add": 0.5} and got.new_items == {"tiny_add": {}}


def _context(tmp_path: Path, cache: str = "cache"):
    from graphmerge.executor import run_nodes
    from graphmerge.runner import make_context
    from graphmerge.spec import load_graph

    graph = tmp_path / "g.yaml"
    graph.write_text(f"nodes:\n  base: {{op: load, path: {MODELS / 'base'}}}\n")
    spec = load_graph(graph)
    ctx = make_context(spec, cache_dir=tmp_path / cache, device="cpu", progress=False, log=lambda _m: None)
    return ctx, run_nodes(ctx, spec)["base"]


def _params(limit, **more):
    from graphmerge.nodes.evaluate import EvaluateParams

    return EvaluateParams(
        input="base",
        tasks=[{"task": "tiny_add", "metric": "exact_match"}, {"task": "tiny_sort_mc", "metric": "acc"}],
        include_path=[TASKS],
        limit=limit,
        **more,
    )


def test_trial_evaluations_run_only_new_examples(tmp_path):
    """The path search trials take: limit 10 then 20 runs 10 + 10 examples per task and gives a fresh
    limit-20 run's scores; asking again runs nothing."""
    from graphmerge.nodes.evaluate import run_evaluation

    ctx, model = _context(tmp_path)
    small = run_evaluation(ctx, _params(10), model)
    assert ctx.stats.examples_evaluated == 20 and ctx.stats.evaluations_run == 2
    big = run_evaluation(ctx, _params(20), model)
    assert ctx.stats.examples_evaluated == 40 and ctx.stats.evaluations_run == 4
    again = run_evaluation(ctx, _params(15), model)  # a prefix of what is known: scored, not run
    assert ctx.stats.examples_evaluated == 40 and ctx.stats.evaluations_run == 6
    assert run_evaluation(ctx, _params(20), model) == big and ctx.stats.evaluations_cached == 2

    fresh_ctx, fresh_model = _context(tmp_path, "fresh")
    assert run_evaluation(fresh_ctx, _params(20), fresh_model)["scores"] == big["scores"]
    assert fresh_ctx.stats.examples_evaluated == 40
    whole = evaluate(
        MODELS / "base",
        None,
        [TaskSpec("tiny_add", "exact_match"), TaskSpec("tiny_sort_mc", "acc")],
        TASKS,
        limit=15,
    )
    assert again["scores"] == whole.scores
    assert small["scores"] != big["scores"] or small["scores"] == whole.scores  # not a constant


def test_graph_node_writes_lm_eval_results_json(tmp_path, capsys):
    from graphmerge.cli import main

    graph = tmp_path / "g.yaml"
    graph.write_text(
        f"""
nodes:
  base: {{op: load, path: {MODELS / "base"}}}
  score:
    op: evaluate
    input: base
    tasks: [{{task: tiny_add, metric: "exact_match,strip"}}]
    include_path: [{TASKS}]
    limit: 0.1
    bootstrap_iters: 200
    gen_kwargs: "max_gen_toks=16"
    results_file: {tmp_path / "scores.json"}
    lm_eval_results_file: {tmp_path / "lm_eval.json"}
"""
    )
    args = ["run", str(graph), "--cache-dir", str(tmp_path / "cache"), "--json", "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    raw = json.loads((tmp_path / "lm_eval.json").read_text())
    ours = json.loads((tmp_path / "scores.json").read_text())
    # lm-eval's own layout: results keyed 'metric,filter' with stderr, configs, versions, sample counts
    res = raw["results"]["tiny_add"]
    assert ours["scores"]["tiny_add"] == res["exact_match,strip"] == first["scores"]["score"]["tiny_add"]
    assert ours["stderr"]["tiny_add"] == res["exact_match_stderr,strip"] > 0
    assert raw["n-samples"]["tiny_add"] == {"original": 200, "effective": 20}  # 0.1 of 200
    assert raw["configs"]["tiny_add"]["generation_kwargs"]["max_gen_toks"] == 16
    assert raw["config"]["bootstrap_iters"] == 200 and raw["config"]["limit"] == 0.1
    assert "pretty_env_info" in raw and "transformers_version" in raw
    (tmp_path / "lm_eval.json").unlink()
    assert main(args) == 0  # from the cache, the file comes back identical
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["evaluations"] == {"run": 0, "cached": 1}
    assert json.loads((tmp_path / "lm_eval.json").read_text()) == raw


def test_environment_is_collected_once_per_process(tmp_path):
    """lm-eval's add_env_info (torch collect_env) runs at most once, however many evaluations."""
    from graphmerge.evaluation import environment_info
    from graphmerge.nodes.evaluate import run_evaluation

    environment_info.cache_clear()
    ctx, model = _context(tmp_path)
    prof = cProfile.Profile()
    prof.enable()
    for limit in (3, 4):
        run_evaluation(ctx, _params(limit), model, lm_eval_results=True)
        run_evaluation(ctx, _params(limit + 2), model)
    prof.disable()
    calls = {
        f[2]: v[1]
        for f, v in pstats.Stats(prof).stats.items()
        if f[2] in ("add_env_info", "get_pretty_env_info")
    }
    assert calls.get("add_env_info") == 1, calls
    assert ctx.stats.evaluations_run == 8


# --------------------------------------------------------------------------------------- options
def _two_filter_task(tmp_path: Path) -> Path:
    """tiny_add with a second filter, like gsm8k's strict-match / flexible-extract."""
    folder = tmp_path / "tasks"
    shutil.copytree(TASKS / "tiny", folder)
    text = (
        (folder / "tiny_add.yaml")
        .read_text()
        .replace("task: tiny_add", "task: tiny_add2")
        .replace("tag: [tiny]", "")
    )
    second = (
        "filter_list:\n"
        "  - name: first-char\n"
        "    filter:\n"
        "      - function: regex\n"
        "        regex_pattern: '^(.)'\n"
        "      - function: take_first\n"
    )
    text = text.replace("filter_list:\n", second)
    (folder / "tiny_add2.yaml").write_text(text)
    return folder


def test_metric_filter_is_chosen_never_guessed(tmp_path, base_model):
    tasks = _two_filter_task(tmp_path)
    with pytest.raises(EvaluationError, match=r"2 filters \(first-char, strip\).*exact_match,first-char"):
        evaluate(base_model, MODELS / "base", [TaskSpec("tiny_add2", "exact_match")], tasks, limit=5)
    with pytest.raises(EvaluationError, match="no filter 'flexible-extract'.*first-char, strip"):
        evaluate(
            base_model,
            MODELS / "base",
            [TaskSpec("tiny_add2", "exact_match,flexible-extract")],
            tasks,
            limit=5,
        )
    strip = evaluate(
        base_model, MODELS / "base", [TaskSpec("tiny_add2", "exact_match,strip")], tasks, limit=20
    )
    first = evaluate(
        base_model, MODELS / "base", [TaskSpec("tiny_add2", "exact_match,first-char")], tasks, limit=20
    )
    res = strip.raw["results"]["tiny_add2"]
    assert strip.scores["tiny_add2"] == res["exact_match,strip"]
    assert first.scores["tiny_add2"] == res["exact_match,first-char"]
    assert res["exact_match,strip"] != res["exact_match,first-char"]
    # the per-example path reads the chosen filter's values too
    got = score_examples(
        base_model,
        MODELS / "base",
        [TaskSpec("tiny_add2", "exact_match,first-char")],
        tasks,
        {},
        EvalOptions(limit=20),
    )
    assert got.scores == first.scores


def test_generation_and_prompt_options_reach_lm_eval(base_model):
    spec = [TaskSpec("tiny_add", "exact_match")]
    plain = evaluate(base_model, MODELS / "base", spec, TASKS, limit=10, log_samples=True)
    short = evaluate(
        base_model,
        MODELS / "base",
        spec,
        TASKS,
        options=EvalOptions(limit=10, gen_kwargs={"max_gen_toks": 1}),
    )
    assert short.raw["configs"]["tiny_add"]["generation_kwargs"]["max_gen_toks"] == 1
    assert short.scores["tiny_add"] < plain.scores["tiny_add"]  # one token cannot hold the answers
    told = evaluate(
        base_model,
        MODELS / "base",
        spec,
        TASKS,
        options=EvalOptions(limit=10, system_instruction="Add:", log_samples=True),
    )
    prompts = [s["arguments"][0][0] for s in told.raw["samples"]["tiny_add"]]
    plain_prompts = [s["arguments"][0][0] for s in plain.raw["samples"]["tiny_add"]]
    assert all(p.startswith("Add:") and p.endswith(q) for p, q in zip(prompts, plain_prompts, strict=True))


def test_fraction_limit_and_auto_batch_size(base_model):
    spec = [TaskSpec("tiny_reverse", "exact_match")]
    frac = evaluate(
        base_model, MODELS / "base", spec, TASKS, options=EvalOptions(limit=0.05, batch_size="auto")
    )
    count = evaluate(base_model, MODELS / "base", spec, TASKS, limit=10)
    assert frac.raw["n-samples"]["tiny_reverse"]["effective"] == 10
    assert frac.scores == count.scores


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"limit": 2.5}, "neither a count nor a fraction"),
        ({"batch_size": "fast"}, "'auto' or 'auto:N'"),
        ({"fewshot_as_multiturn": True}, "needs apply_chat_template"),
        ({"bootstrap_iters": -1}, ">= 0"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(EvaluationError, match=message):
        EvalOptions(**kwargs)


def test_chat_template_missing_is_a_clear_error(base_model):
    with pytest.raises(EvaluationError, match="chat"):
        evaluate(
            base_model,
            MODELS / "base",
            [TaskSpec("tiny_add", "exact_match")],
            TASKS,
            options=EvalOptions(limit=3, apply_chat_template=True),
        )


# ------------------------------------------------------------------------------- resident model
def test_resident_model_copies_in_place_and_equals_a_fresh_build():
    from graphmerge.evaluation.model import drop_resident_model

    drop_resident_model()
    specs = [TaskSpec("tiny_add", "exact_match"), TaskSpec("tiny_reverse", "exact_match")]
    config, first = _tensors("add")
    kept = {n: t.clone() for n, t in first.items()}
    resident = resident_model(config, first)
    for name in ("reverse", "base", "sort"):
        cfg, tensors = _tensors(name)
        again = resident_model(cfg, tensors)
        assert again is resident  # the same instance, new values
        fresh = build_model(cfg, tensors)
        ours, theirs = again.state_dict(), fresh.state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
        assert (
            evaluate(again, MODELS / "base", specs, TASKS, limit=20).scores
            == evaluate(fresh, MODELS / "base", specs, TASKS, limit=20).scores
        )
    # copying in never writes into the tensors the resident model was first built from
    assert all(torch.equal(first[n], kept[n]) for n in kept)
    # another architecture replaces it
    small = {**config, "num_hidden_layers": config["num_hidden_layers"] - 1}
    last = config["num_hidden_layers"] - 1
    fewer = {n: t for n, t in first.items() if f".layers.{last}." not in n}
    assert resident_model(small, fewer) is not resident
    drop_resident_model()


def test_resident_model_tied_embeddings_follow_the_embedding():
    from graphmerge.evaluation.model import drop_resident_model

    drop_resident_model()
    config, tensors = _tensors("base")
    config = {**config, "tie_word_embeddings": True}
    tensors = {n: t for n, t in tensors.items() if n != "lm_head.weight"}
    resident_model(config, tensors)
    _, other = _tensors("add")
    other = {n: t for n, t in other.items() if n != "lm_head.weight"}
    model = resident_model(config, other)
    fresh = build_model(config, other)
    assert torch.equal(model.lm_head.weight, fresh.lm_head.weight)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    drop_resident_model()


# --------------------------------------------------------------------------------------- threads
def test_scores_do_not_depend_on_thread_count(base_model):
    specs = [TaskSpec("tiny_add", "exact_match"), TaskSpec("tiny_sort_mc", "acc")]
    one = evaluate(
        base_model, MODELS / "base", specs, TASKS, options=EvalOptions(limit=30, threads=1, log_samples=True)
    )
    two = evaluate(
        base_model, MODELS / "base", specs, TASKS, options=EvalOptions(limit=30, threads=2, log_samples=True)
    )
    assert one.scores == two.scores
    assert _rows(one, "tiny_add") == _rows(two, "tiny_add")
    assert torch.get_num_threads() == torch.get_num_threads()  # restored (no exception above)


def test_auto_threads_follow_model_size():
    from graphmerge.nodes.evaluate import EvaluationOptions, approx_parameters

    config, tensors = _tensors("base")
    exact = sum(t.numel() for t in tensors.values())
    assert 0.5 < approx_parameters(config) / exact < 2
    opts = EvaluationOptions()
    assert opts.torch_threads(config) == 1
    seven_b = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert opts.torch_threads(seven_b) == cores
    assert EvaluationOptions(threads=3).torch_threads(seven_b) == 3


def test_vllm_backend_without_vllm_names_the_extra():
    if "vllm" in sys.modules or __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from pydantic import ValidationError

    from graphmerge.nodes.evaluate import EvaluationOptions

    with pytest.raises(ValidationError, match=r"pip install 'graphmerge\[vllm\]'"):
        EvaluationOptions(backend="vllm")


def test_vllm_gets_the_merged_model_as_a_temporary_folder(tmp_path):
    """vLLM loads weights from files: the folder it is given holds exactly the model's tensors, and
    goes away after the evaluation (vLLM itself is not installed here)."""
    from safetensors.torch import load_file

    from graphmerge.nodes.evaluate import _ModelOnce

    ctx, model = _context(tmp_path)
    once = _ModelOnce(ctx, _params(5), model)
    folder = once.folder()
    assert folder.is_relative_to(ctx.cache.root) and (folder / "tokenizer.json").is_file()
    _, expected = _tensors("base")
    written = load_file(folder / "model.safetensors")
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[n], expected[n]) for n in expected)
    once.cleanup()
    assert not folder.exists()


def test_a_score_cached_under_an_unchosen_filter_never_comes_back(tmp_path):
    """Old caches hold scores for `metric: exact_match` on multi-filter tasks (a filter was picked
    silently); such a node is an error before any cache lookup."""
    from graphmerge.evaluation import task_config_hash
    from graphmerge.nodes.evaluate import EvaluateParams, evaluation_key, run_evaluation

    tasks = _two_filter_task(tmp_path)
    ctx, model = _context(tmp_path)
    params = EvaluateParams(
        input="base", tasks=[{"task": "tiny_add2", "metric": "exact_match"}], include_path=[tasks], limit=5
    )
    old_key = evaluation_key(model.key, task_config_hash("tiny_add2", [str(tasks)]), "exact_match", params)
    ctx.cache.put_result(old_key, 0.123)
    with pytest.raises(EvaluationError, match="exact_match,first-char"):
        run_evaluation(ctx, params, model)


def test_no_lm_eval_internals_are_patched_and_bars_stay_off(base_model, capfd):
    import lm_eval.api.task as lm_task
    import lm_eval.evaluator as lm_evaluator
    import tqdm

    git_hash, task_tqdm = lm_evaluator.get_git_commit_hash, lm_task.tqdm
    capfd.readouterr()
    evaluate(base_model, MODELS / "base", [TaskSpec("tiny_reverse", "exact_match")], TASKS, limit=12)
    err = capfd.readouterr().err
    assert lm_evaluator.get_git_commit_hash is git_hash and lm_task.tqdm is task_tqdm is tqdm.tqdm
    assert "\r" not in err and "it/s" not in err, err


_PROBE = """
import json, sys
from pathlib import Path
from safetensors.torch import load_file
from graphmerge.evaluation import EvalOptions, TaskSpec, build_model, score_examples
m = Path(sys.argv[1])
model = build_model(json.loads((m / "config.json").read_text()), load_file(m / "model.safetensors"))
specs = [TaskSpec("tiny_add", "exact_match"), TaskSpec("tiny_sort_mc", "acc")]
got = score_examples(model, m, specs, sys.argv[2], {}, EvalOptions(limit=20, threads=int(sys.argv[3])))
print(json.dumps({"scores": got.scores, "items": got.new_items}, sort_keys=True))
"""


def test_per_example_values_are_identical_across_processes_and_threads(base_model):
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "7", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(MODELS / "base"), str(TASKS), "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    specs = [TaskSpec("tiny_add", "exact_match"), TaskSpec("tiny_sort_mc", "acc")]
    ours = score_examples(base_model, MODELS / "base", specs, TASKS, {}, EvalOptions(limit=20, threads=1))
    assert theirs["scores"] == ours.scores
    assert theirs["items"] == {
        t: {str(k): v for k, v in items.items()} for t, items in ours.new_items.items()
    }
