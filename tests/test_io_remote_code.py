"""Model folders carrying their own Python (auto_map): nothing runs without --trust-remote-code,
the refusal is one line naming the folder and the flag, and with the flag everything works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from remote_code_folder import make_remote_code_folder

from graphmerge.errors import ModelError
from graphmerge.evaluation import build_model, load_tokenizer
from graphmerge.io.folder import ModelFolder
from graphmerge.io.remote_code import code_files, custom_code_modules
from graphmerge.io.vocab import tokenizer_vocab
from graphmerge.runner import run_graph

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "graphs" / "tasks"


@pytest.fixture()
def custom(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "marker.txt"
    return make_remote_code_folder(tmp_path / "custom", marker), marker


def _graph(folder: Path, out: Path, *, evaluate: bool = True) -> str:
    text = f"""
nodes:
  m: {{op: load, path: {folder}}}
  save: {{op: save, input: m, path: {out}}}
"""
    if evaluate:
        text += f"""  ev:
    op: evaluate
    input: m
    tasks: [tiny_add]
    include_path: [{TASKS}]
    limit: 3
"""
    return text


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),  # where transformers copies trusted code
        "GRAPHMERGE_CACHE": str(tmp_path / "cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "graphmerge.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


def test_custom_code_is_found_from_auto_map(custom):
    folder, _ = custom
    assert custom_code_modules(folder, "tokenizer") == ["tokenization_marker"]
    assert custom_code_modules(folder, "model") == ["configuration_marker", "modeling_marker"]
    assert sorted(f.name for f in code_files(folder)) == [
        "configuration_marker.py",
        "modeling_marker.py",
        "tokenization_marker.py",
    ]
    assert code_files(REPO / "models" / "tiny" / "base") == []


def test_untrusted_tokenizer_and_model_raise_one_line_and_run_nothing(custom):
    folder, marker = custom
    with pytest.raises(ModelError) as exc:
        load_tokenizer(folder)
    line = exc.value.one_line()
    assert "\n" not in line and str(folder) in line and "--trust-remote-code" in line

    f = ModelFolder.open(folder)
    tensors = {n: f.read(n) for n in f.tensor_names}
    with pytest.raises(ModelError, match="--trust-remote-code") as exc:
        build_model(f.config, tensors, code_dir=folder)
    assert str(folder) in exc.value.one_line()
    # The vocabulary comes from tokenizer.json, which is data: reading it imports nothing.
    assert len(tokenizer_vocab(folder)) == f.config["vocab_size"]
    assert not marker.exists()


def test_merge_and_save_run_no_code_and_copy_none_without_the_flag(custom, tmp_path, capsys):
    folder, marker = custom
    out = tmp_path / "out"
    run_graph(text=_graph(folder, out, evaluate=False), cache_dir=tmp_path / "cache")
    assert not marker.exists()
    assert not list(out.glob("*.py"))
    err = capsys.readouterr().err
    assert "modeling_marker.py" in err and "--trust-remote-code" in err  # says what the output lacks


@pytest.mark.slow
def test_evaluate_without_the_flag_is_refused_and_with_it_works(custom, tmp_path):
    folder, marker = custom
    (tmp_path / "g.yaml").write_text(_graph(folder, tmp_path / "out"))
    proc = _cli(tmp_path, "run", "g.yaml", "--no-progress")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(folder) in errors[0] and "--trust-remote-code" in errors[0]
    assert not marker.exists()

    proc = _cli(tmp_path, "run", "g.yaml", "--no-progress", "--trust-remote-code", "--json")
    assert proc.returncode == 0, proc.stderr
    assert set(marker.read_text().split()) == {"config", "model", "tokenizer"}
    scores = json.loads(proc.stdout.strip().splitlines()[-1])["scores"]["ev"]
    assert 0.0 <= scores["tiny_add"] <= 1.0
    # The saved folder carries the code and loads with transformers' own trust_remote_code.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.py")) == [
        "configuration_marker.py",
        "modeling_marker.py",
        "tokenization_marker.py",
    ]
    check = (
        "import sys, torch, transformers as t\n"
        "m = t.AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "k = t.AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "print(type(m).__name__, type(k).__name__)\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules2")}
    loaded = subprocess.run(
        [sys.executable, "-c", check, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert loaded.stdout.split() == ["MarkerForCausalLM", "MarkerTokenizer"], loaded.stderr


@pytest.mark.slow
def test_graph_setting_is_consent_too(custom, tmp_path):
    folder, marker = custom
    (tmp_path / "g.yaml").write_text("trust_remote_code: true\n" + _graph(folder, tmp_path / "out"))
    proc = _cli(tmp_path, "run", "g.yaml", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "model" in marker.read_text().split()


def test_trusted_build_model_uses_the_folders_classes(custom, tmp_path):
    folder, marker = custom
    code = (
        "import sys\n"
        "from graphmerge.evaluation import build_model\n"
        "from graphmerge.io.folder import ModelFolder\n"
        "f = ModelFolder.open(sys.argv[1])\n"
        "m = build_model(f.config, {n: f.read(n) for n in f.tensor_names}, trust_remote_code=True,"
        " code_dir=sys.argv[1])\n"
        "print(type(m).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_MODULES_CACHE": str(tmp_path / "mods")}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.stdout.strip() == "MarkerForCausalLM", proc.stderr
    assert set(marker.read_text().split()) == {"config", "model"}


def test_validate_warns_about_folders_with_code_unless_trusted(custom, tmp_path, capsys):
    from graphmerge.cli import main

    folder, marker = custom
    graph = tmp_path / "g.yaml"
    graph.write_text(_graph(folder, tmp_path / "out", evaluate=False))
    assert main(["validate", str(graph)]) == 0
    err = capsys.readouterr().err
    assert "warning: node 'm'" in err and "--trust-remote-code" in err and "modeling_marker.py" in err
    assert main(["validate", str(graph), "--trust-remote-code"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.slow
def test_no_question_is_asked_on_a_terminal(custom, tmp_path):
    """transformers asks "Do you wish to run the custom code?" when trust_remote_code is left unset and
    a terminal is attached; graphmerge always sets it, so even on a terminal the answer is the error."""
    import pty

    folder, marker = custom
    # Only the tokenizer needs code here, so the model builds and the tokenizer is where it would ask.
    (folder / "config.json").write_text((REPO / "models" / "tiny" / "base" / "config.json").read_text())
    (tmp_path / "g.yaml").write_text(_graph(folder, tmp_path / "out"))
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_MODULES_CACHE": str(tmp_path / "mods")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "graphmerge.cli", "run", "g.yaml", "--no-progress"],
        cwd=tmp_path,
        env={**env, "GRAPHMERGE_CACHE": str(tmp_path / "cache")},
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
    )
    os.close(child_fd)
    os.write(main_fd, b"y\n" * 4)  # an answer, were anything to ask
    output = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=300) == 2, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "--trust-remote-code" in text and "tokenizer code" in text and "wish to run" not in text
    assert not marker.exists()
