"""Train the bundled tiny-deep world: a 12-layer base with layer redundancy and three band experts.

    python models/tiny-deep/train.py              # retrain, write models/tiny-deep/{base,add,reverse,sort}
                                                  # and the task data graphs/tasks/tiny_deep/data/*.jsonl
    python models/tiny-deep/train.py --no-save    # train and print the probe table only (for tuning)
    python models/tiny-deep/train.py --data-only  # only the task data

A constructed world, built so that each search strategy has something to find:
  * the base is trained with LayerDrop (stochastic depth: each inner layer skipped with probability
    `layer_drop` per step), so no single inner layer is indispensable and pruning has redundancy to find;
  * each expert is the base with ONLY a band of two layers changed (add: layers 2-3, reverse: 4-5, sort:
    6-7; everything else, embeddings and head included, stays the base's), so the skills live in different
    layer ranges and a per-layer (LFS) or per-position (DIS) choice can combine them, while a uniform
    average dilutes each band's change by the number of experts. The bands are trained in one model with
    gradient routing and band dropout (`train_bands`), so that each works alone and all three together.

Skills (character level, no BOS; the answer ends with "." then <eos>): add, reverse, sort as in
models/tiny/train.py (whose data split and tokenizer this script reuses), plus
    shift    abc=bcd.        3 to 6 lowercase letters, each replaced by the next one (z -> a)
which the base is trained on most and no expert specialises in (a skill the merges must keep).

Deterministic on CPU: fixed seeds, deterministic algorithms, one intra-op thread (CPU matmul results may
depend on the thread count).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import string
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_TASK_DATA = REPO / "graphs" / "tasks" / "tiny_deep" / "data"


def _tiny_module():
    spec = importlib.util.spec_from_file_location("tiny_train", REPO / "models" / "tiny" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


tiny = _tiny_module()
SKILLS = ("add", "reverse", "sort", "shift")
EXPERTS = ("add", "reverse", "sort")
SHIFT_SEED = 4321  # the shift skill's own held-out draw (tiny's split covers add, reverse, sort)


def solve(skill: str, x: str) -> str:
    if skill == "shift":
        return "".join(chr((ord(c) - 97 + 1) % 26 + 97) for c in x)
    return tiny.solve(skill, x)


def prompt_of(skill: str, x: str) -> str:
    return x + "=" if skill == "shift" else tiny.prompt_of(skill, x)


def _letters(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(*tiny.LEN_RANGE)))


@dataclass(frozen=True)
class DeepSplits:
    test: dict[str, list[str]]
    val: dict[str, list[str]]
    train_add: list[str]
    held_out: frozenset[str]  # every test/val input of every skill: never trained on, for any skill


def make_splits() -> DeepSplits:
    base = tiny.make_splits()
    rng = random.Random(SHIFT_SEED)
    taken = set(base.held_out)
    shift: list[str] = []
    while len(shift) < tiny.N_TEST + tiny.N_VAL:
        x = _letters(rng)
        if x not in taken:
            shift.append(x)
            taken.add(x)
    test = {**base.test, "shift": shift[: tiny.N_TEST]}
    val = {**base.val, "shift": shift[tiny.N_TEST :]}
    return DeepSplits(test=test, val=val, train_add=base.train_add, held_out=frozenset(taken))


def write_task_data(splits: DeepSplits, out_dir: Path) -> None:
    """SKILL.jsonl (held-out test split) and SKILL_val.jsonl (validation split searches select on)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for skill in SKILLS:
        for inputs, name in (
            (splits.test[skill], f"{skill}.jsonl"),
            (splits.val[skill], f"{skill}_val.jsonl"),
        ):
            rows = [{"input": x, "prompt": prompt_of(skill, x), "answer": solve(skill, x)} for x in inputs]
            (out_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def draw(skill: str, splits: DeepSplits, rng: random.Random) -> tuple[str, str]:
    """One training example (prompt, answer + "."); held-out inputs are redrawn."""
    if skill == "add":
        x = rng.choice(splits.train_add)
    else:
        x = _letters(rng)
        while x in splits.held_out:
            x = _letters(rng)
    return prompt_of(skill, x), solve(skill, x) + "."


def encode_batch(rows: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, labels (loss on the answer and the final <eos> only), right-padded."""
    seqs = [[tiny.VOCAB[c] for c in p + a] + [tiny.EOS] for p, a in rows]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tiny.PAD] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    labels = ids.masked_fill(mask == 0, -100)
    for i, (p, _) in enumerate(rows):
        labels[i, : len(p)] = -100
    return ids, mask, labels


# ---------------------------------------------------------------------------------------------- model
def make_config():
    """models/tiny's config, made deep and narrow (head_dim is derived again from the new width)."""
    from transformers import LlamaConfig

    shape = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 12, "head_dim": 16}
    return LlamaConfig(**{**tiny.make_config().to_dict(), **shape})


def new_model(seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(make_config()).float()


class LayerDrop:
    """Stochastic depth: while active, each droppable layer is skipped (its output replaced by its input)
    with probability p, decided once per step from a seeded generator. The hooks leave the weights and
    the saved model untouched."""

    def __init__(self, model, droppable: list[int], p: float, seed: int):
        self.p, self.rng, self.droppable, self.dropped = p, random.Random(seed), droppable, set()
        self.handles = [model.model.layers[i].register_forward_hook(self._hook(i)) for i in droppable]

    def _hook(self, i: int):
        def hook(module, args, output):
            return args[0] if i in self.dropped else output

        return hook

    def step(self) -> None:
        self.dropped = {i for i in self.droppable if self.rng.random() < self.p}

    def remove(self) -> None:
        self.dropped = set()
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------------------- training
@dataclass
class Phase(tiny.Phase):
    layer_drop: float = 0.0  # LayerDrop probability of each inner layer


@dataclass
class Recipe:
    base: Phase = field(
        default_factory=lambda: Phase(
            steps=800,
            lr=2e-3,
            mix={"add": 0.5, "reverse": 0.2, "sort": 0.2, "shift": 1.0},
            seed=1,
            layer_drop=0.25,
        )
    )
    bands: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"add": (2, 3), "reverse": (4, 5), "sort": (6, 7)}
    )
    expert_steps: int = 300
    expert_lr: float = 2e-3
    replay: float = 0.2  # fraction of expert batches drawn from the other skills
    band_dropout: float = 0.5  # chance that another band's change is switched off during a band's step
    expert_seed: int = 100


def train_phase(model, phase: Phase, splits: DeepSplits, tag: str, log_every: int = 250) -> None:
    rng = random.Random(phase.seed)
    torch.manual_seed(phase.seed)
    n = model.config.num_hidden_layers
    drop = LayerDrop(model, list(range(1, n - 1)), phase.layer_drop, phase.seed + 7)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=phase.lr, betas=(0.9, 0.98), weight_decay=phase.weight_decay)
    skills, weights = zip(*((s, w) for s, w in phase.mix.items() if w > 0))
    model.train()
    t0 = time.time()
    for step in range(phase.steps):
        warm = min(1.0, (step + 1) / phase.warmup)
        t = max(0.0, (step - phase.warmup) / max(1, phase.steps - phase.warmup))
        for g in opt.param_groups:
            g["lr"] = phase.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        rows = [draw(rng.choices(skills, weights)[0], splits, rng) for _ in range(phase.batch)]
        ids, mask, labels = encode_batch(rows)
        drop.step()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if log_every and (step % log_every == 0 or step == phase.steps - 1):
            print(f"[{tag}] step {step:5d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    drop.remove()
    model.eval()


def train_bands(base_sd: dict, recipe: Recipe, splits: DeepSplits, log_every: int = 250) -> dict[str, dict]:
    """The three experts' bands trained in ONE model, gradient-routed: a step on skill s (its batch
    `1 - replay` skill s, the rest the other skills) updates only band s, while each other band's change is
    switched off (the base's weights put back for that step) with probability `band_dropout`. Each band
    thus learns its skill both next to the other bands and without them: expert s is the base with band s
    alone, and the composite of all three bands works too. (Bands fine-tuned separately did not compose:
    each one's change of the residual stream broke the bands above it.)"""
    model = new_model(0)
    model.load_state_dict(base_sd, strict=True)
    rng = random.Random(recipe.expert_seed)
    torch.manual_seed(recipe.expert_seed)
    prefixes = {s: tuple(f"model.layers.{i}." for i in recipe.bands[s]) for s in EXPERTS}
    named = dict(model.named_parameters())
    bands = {s: {n: p for n, p in named.items() if n.startswith(prefixes[s])} for s in EXPERTS}
    for p in model.parameters():
        p.requires_grad_(False)
    opts = {
        s: torch.optim.AdamW(
            list(bands[s].values()), lr=recipe.expert_lr, betas=(0.9, 0.98), weight_decay=0.0
        )
        for s in EXPERTS
    }
    mixes = {}
    for s in EXPERTS:
        others = [o for o in SKILLS if o != s]
        mixes[s] = ([s, *others], [1.0 - recipe.replay] + [recipe.replay / len(others)] * len(others))
    model.train()
    t0 = time.time()
    for step in range(recipe.expert_steps * len(EXPERTS)):
        skill, k = EXPERTS[step % len(EXPERTS)], step // len(EXPERTS)
        t = k / max(1, recipe.expert_steps - 1)
        opts[skill].param_groups[0]["lr"] = (
            recipe.expert_lr * min(1.0, (k + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        )
        off = [o for o in EXPERTS if o != skill and rng.random() < recipe.band_dropout]
        kept = {n: p.detach().clone() for o in off for n, p in bands[o].items()}
        with torch.no_grad():
            for o in off:
                for n, p in bands[o].items():
                    p.copy_(base_sd[n])
        for p in bands[skill].values():
            p.requires_grad_(True)
        rows = [draw(rng.choices(*mixes[skill])[0], splits, rng) for _ in range(recipe.base.batch)]
        ids, mask, labels = encode_batch(rows)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opts[skill].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(bands[skill].values()), 1.0)
        opts[skill].step()
        with torch.no_grad():
            for p in bands[skill].values():
                p.requires_grad_(False)
            for o in off:
                for n, p in bands[o].items():
                    p.copy_(kept[n])
        if log_every and (k % log_every == 0 or k == recipe.expert_steps - 1):
            print(f"[{skill}] step {k:5d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    sd = model.state_dict()
    return {
        s: {n: (sd[n] if n.startswith(prefixes[s]) else base_sd[n]).detach().clone() for n in base_sd}
        for s in EXPERTS
    }


def train_all(
    recipe: Recipe, splits: DeepSplits, base_cache: Path | None = None
) -> tuple[dict, dict[str, dict]]:
    """(base state dict, {skill: expert state dict}). `base_cache` (tuning only) keeps the trained base
    in a file keyed by its phase, so that expert settings can be tried without retraining it."""
    key = json.dumps(asdict(recipe.base), sort_keys=True)
    cached = torch.load(base_cache) if base_cache and base_cache.is_file() else None
    if cached is not None and cached["key"] == key:
        base_sd = cached["sd"]
    else:
        base = new_model(recipe.base.seed)
        train_phase(base, recipe.base, splits, "base")
        base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
        if base_cache:
            torch.save({"key": key, "sd": base_sd}, base_cache)
    return base_sd, train_bands(base_sd, recipe, splits)


# ----------------------------------------------------------------------------------------------- probe
@torch.no_grad()
def exact_match(model, skill: str, inputs: list[str]) -> float:
    """Greedy decoding, prompts grouped by length (no padding); fraction exactly right."""
    inv = {i: t for t, i in tiny.VOCAB.items()}
    right = 0
    by_len: dict[int, list[str]] = {}
    for x in inputs:
        by_len.setdefault(len(prompt_of(skill, x)), []).append(x)
    for xs in by_len.values():
        ids = torch.tensor([[tiny.VOCAB[c] for c in prompt_of(skill, x)] for x in xs])
        start = ids.shape[1]
        for _ in range(tiny.LEN_RANGE[1] + 3):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
        for x, row in zip(xs, ids[:, start:].tolist()):
            text = "".join(inv[i] if i >= len(tiny.SPECIALS) else "\0" for i in row)
            right += "." in text and text.split(".")[0] == solve(skill, x)
    return right / len(inputs)


def dropped(sd: dict, layers: set[int], n: int) -> tuple[dict, int]:
    """The state dict without `layers`, the rest renumbered."""
    keep = [i for i in range(n) if i not in layers]
    out = {k: v for k, v in sd.items() if not k.startswith("model.layers.")}
    for new, old in enumerate(keep):
        prefix = f"model.layers.{old}."
        out.update(
            {f"model.layers.{new}." + k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        )
    return out, len(keep)


def probe(base_sd: dict, experts: dict[str, dict], splits: DeepSplits, n_eval: int) -> None:
    """Validation exact match of the sources and of the merges each strategy should find (or beat)."""
    from transformers import LlamaForCausalLM

    def score(sd: dict, layers: int = 12) -> dict[str, float]:
        cfg = make_config()
        cfg.num_hidden_layers = layers
        m = LlamaForCausalLM(cfg).eval()
        m.load_state_dict(sd, strict=True)
        return {s: exact_match(m, s, splits.val[s][:n_eval]) for s in SKILLS}

    deltas = [e for e in experts.values()]
    rows = [("base", score(base_sd))] + [(f"expert:{k}", score(v)) for k, v in experts.items()]
    rows.append(
        ("task_arithmetic lam=1 (= band composite)", score(tiny.task_arithmetic(base_sd, deltas, 1.0)))
    )
    rows.append(("linear average of experts", score({k: sum(e[k] for e in deltas) / 3 for k in base_sd})))
    for layers in ({1, 5, 9}, {3, 6, 9}, {8, 9, 10}, {1, 2, 3}):
        sd, n = dropped(base_sd, layers, 12)
        rows.append((f"base without layers {sorted(layers)}", score(sd, n)))
    print(f"{'model':42s} " + " ".join(f"{s:>8s}" for s in SKILLS) + "      sum", flush=True)
    for name, sc in rows:
        print(
            f"{name:42s} " + " ".join(f"{sc[s]:8.3f}" for s in SKILLS) + f" {sum(sc.values()):8.3f}",
            flush=True,
        )


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="writes OUT/{base,add,reverse,sort}")
    ap.add_argument("--base-steps", type=int, default=Recipe().base.steps)
    ap.add_argument("--base-lr", type=float, default=Recipe().base.lr)
    ap.add_argument("--layer-drop", type=float, default=Recipe().base.layer_drop)
    ap.add_argument("--task-data", type=Path, default=DEFAULT_TASK_DATA)
    ap.add_argument(
        "--base-mix", default="0.5,0.2,0.2,1", help="add,reverse,sort,shift weights of the base mix"
    )
    ap.add_argument("--expert-steps", type=int, default=Recipe().expert_steps)
    ap.add_argument("--expert-lr", type=float, default=Recipe().expert_lr)
    ap.add_argument("--replay", type=float, default=Recipe().replay)
    ap.add_argument("--band-dropout", type=float, default=Recipe().band_dropout)
    ap.add_argument("--probe", type=int, default=100, help="validation examples per skill in the probe table")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--base-cache", type=Path, help="tuning: reuse a base trained with the same phase")
    ap.add_argument("--data-only", action="store_true")
    args = ap.parse_args(argv)
    splits = make_splits()
    if args.data_only:
        write_task_data(splits, args.task_data)
        print(f"wrote {args.task_data}", flush=True)
        return 0
    tiny.setup_determinism(1)
    default = Recipe()
    recipe = Recipe(
        base=Phase(
            steps=args.base_steps,
            lr=args.base_lr,
            mix=dict(zip(SKILLS, (float(v) for v in args.base_mix.split(",")))),
            seed=default.base.seed,
            layer_drop=args.layer_drop,
        ),
        expert_steps=args.expert_steps,
        expert_lr=args.expert_lr,
        replay=args.replay,
        band_dropout=args.band_dropout,
    )
    print("recipe:", json.dumps(asdict(recipe)), flush=True)
    t0 = time.time()
    base_sd, experts = train_all(recipe, splits, args.base_cache)
    print(f"training took {time.time() - t0:.0f}s", flush=True)
    if not args.no_save:
        from transformers import LlamaForCausalLM

        tok = tiny.make_tokenizer()
        for name, sd in (("base", base_sd), *experts.items()):
            m = LlamaForCausalLM(make_config())
            m.load_state_dict(sd, strict=True)
            tiny.save_model(m, tok, args.out / name)
        write_task_data(splits, args.task_data)
        (args.out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
        print(f"saved to {args.out} and {args.task_data}", flush=True)
    if args.probe:
        probe(base_sd, experts, splits, args.probe)
    print(f"total {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
