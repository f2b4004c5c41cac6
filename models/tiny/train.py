"""Train the bundled tiny world: a base Llama (~1M params) and three skill experts.

    python models/tiny/train.py            # retrain everything, write models/tiny/{base,add,reverse,sort}
                                           # and the held-out task data graphs/tasks/tiny/data/*.jsonl
    python models/tiny/train.py --data-only   # only the task data: test SKILL.jsonl, validation SKILL_val.jsonl

Deterministic on CPU: fixed seeds, torch.use_deterministic_algorithms(True) and one intra-op thread
(CPU matmul results may depend on the thread count, so the thread count is fixed, not the default).

Skills (character level, no BOS; the answer ends with "." then <eos>):
    add      12+35=47.       two 2-digit numbers
    reverse  abcd>dcba.      3 to 6 lowercase letters
    sort     dbca:abcd.      3 to 6 lowercase letters, sorted

The base is trained on a mix of all skills (partial competence everywhere); each expert continues
from the base on its own skill (plus a small replay fraction of the others). The held-out test
examples (written as task data) and the validation examples are never trained on.
"""

from __future__ import annotations

import argparse
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
DEFAULT_TASK_DATA = REPO / "graphs" / "tasks" / "tiny" / "data"

SKILLS = ("add", "reverse", "sort")
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = string.digits + string.ascii_lowercase + "+=.>: \n"
VOCAB = {t: i for i, t in enumerate(SPECIALS + list(CHARS))}
PAD, BOS, EOS = VOCAB["<pad>"], VOCAB["<bos>"], VOCAB["<eos>"]
SEP = {"add": "=", "reverse": ">", "sort": ":"}
N_TEST = 200
N_VAL = 200
DATA_SEED = 1234
LEN_RANGE = [3, 6]  # letters in reverse/sort inputs (set by --len)


# ----------------------------------------------------------------------------------------------- data
def solve(skill: str, x: str) -> str:
    if skill == "add":
        a, b = x.split("+")
        return str(int(a) + int(b))
    if skill == "reverse":
        return x[::-1]
    if skill == "sort":
        return "".join(sorted(x))
    raise ValueError(skill)


def _random_input(skill: str, rng: random.Random) -> str:
    if skill == "add":
        return f"{rng.randint(10, 99)}+{rng.randint(10, 99)}"
    n = rng.randint(*LEN_RANGE)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def prompt_of(skill: str, x: str) -> str:
    return x + ("=" if skill == "add" else SEP[skill])


def _distractors(skill: str, x: str, answer: str, rng: random.Random) -> list[str]:
    """Three plausible wrong answers, deterministic given rng."""
    cands: list[str] = []
    if skill == "add":
        v = int(answer)
        cands += [str(v + 1), str(v - 1), str(v + 10), str(v - 10), answer[::-1]]
    else:
        letters = list(answer)
        cands.append(x if skill == "reverse" else x)  # the unchanged input
        if len(letters) > 1:
            i = rng.randrange(len(letters) - 1)
            sw = letters[:]
            sw[i], sw[i + 1] = sw[i + 1], sw[i]
            cands.append("".join(sw))
        cands.append(answer[1:] + answer[:1])
        cands.append(answer[::-1])
    out: list[str] = []
    for c in cands:
        if c != answer and c not in out and c and not c.startswith("-"):
            out.append(c)
    while len(out) < 3:  # palindromes, repeated letters ...
        if skill == "add":
            c = str(int(answer) + rng.choice([-2, 2, 11, -11, 20, -20, 100]))
        else:
            c = "".join(rng.choice(string.ascii_lowercase) for _ in range(len(answer)))
        if c != answer and c not in out and not c.startswith("-"):
            out.append(c)
    rng.shuffle(out)
    return out[:3]


@dataclass
class Splits:
    test: dict[str, list[str]]
    val: dict[str, list[str]]
    train_add: list[str]  # the finite add training pool (all remaining pairs)
    held_out: set[str]  # every test/val input of every skill


def make_splits(seed: int = DATA_SEED) -> Splits:
    rng = random.Random(seed)
    test: dict[str, list[str]] = {}
    val: dict[str, list[str]] = {}
    all_add = [f"{a}+{b}" for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(all_add)
    test["add"], val["add"], train_add = (
        all_add[:N_TEST],
        all_add[N_TEST : N_TEST + N_VAL],
        all_add[N_TEST + N_VAL :],
    )
    for skill in ("reverse", "sort"):
        seen: list[str] = []
        seen_set: set[str] = set()
        while len(seen) < N_TEST + N_VAL:
            x = _random_input(skill, rng)
            if x not in seen_set:
                seen.append(x)
                seen_set.add(x)
        test[skill], val[skill] = seen[:N_TEST], seen[N_TEST:]
    held = {x for d in (test, val) for xs in d.values() for x in xs}
    return Splits(test=test, val=val, train_add=train_add, held_out=held)


def write_task_data(splits: Splits, out_dir: Path) -> None:
    """SKILL.jsonl: the held-out test split; SKILL_val.jsonl: the validation split that searches select on.
    Neither is ever trained on. Each split draws its distractors from its own generator, so adding the
    validation files left the test files byte-identical."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for skill in SKILLS:
        for inputs, name, seed in (
            (splits.test[skill], f"{skill}.jsonl", f"distractors-{skill}"),
            (splits.val[skill], f"{skill}_val.jsonl", f"distractors-{skill}-val"),
        ):
            rng = random.Random(seed)
            with open(out_dir / name, "w") as f:
                for x in inputs:
                    ans = solve(skill, x)
                    wrong = _distractors(skill, x, ans, rng)
                    label = rng.randrange(4)
                    choices = wrong[:label] + [ans] + wrong[label:]
                    row = {
                        "input": x,
                        "prompt": prompt_of(skill, x),
                        "answer": ans,
                        "choices": choices,
                        "label": label,
                    }
                    f.write(json.dumps(row) + "\n")


class Sampler:
    """Endless deterministic training stream over a skill mixture; never yields held-out inputs."""

    def __init__(self, splits: Splits, mix: dict[str, float], seed: int):
        self.rng = random.Random(seed)
        self.splits = splits
        self.skills = [s for s in SKILLS if mix.get(s, 0) > 0]
        self.weights = [mix[s] for s in self.skills]

    def example(self) -> tuple[str, str]:
        skill = self.rng.choices(self.skills, self.weights)[0]
        if skill == "add":
            x = self.rng.choice(self.splits.train_add)
        else:
            while True:
                x = _random_input(skill, self.rng)
                if x not in self.splits.held_out:
                    break
        return prompt_of(skill, x), solve(skill, x) + "."

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask, labels (loss on the answer and the final <eos> only)."""
        rows = [self.example() for _ in range(n)]
        width = max(len(p) + len(a) + 1 for p, a in rows)
        ids = torch.full((n, width), PAD, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        for i, (p, a) in enumerate(rows):
            seq = [VOCAB[c] for c in p + a] + [EOS]
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, len(p) : len(seq)] = torch.tensor(seq[len(p) :])
        return ids, mask, labels


# ---------------------------------------------------------------------------------------------- model
def make_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(dict(VOCAB), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")  # one token per char
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=64,
    )


def make_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )


def new_model(seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(make_config())
    return model.float()


# ------------------------------------------------------------------------------------------- training
@dataclass
class Phase:
    steps: int
    lr: float
    mix: dict[str, float]
    seed: int
    batch: int = 64
    warmup: int = 50
    weight_decay: float = 0.0


@dataclass
class Recipe:
    base: Phase = field(
        default_factory=lambda: Phase(steps=500, lr=1e-3, mix={"add": 3, "reverse": 1, "sort": 0.5}, seed=1)
    )
    expert_steps: int = 500
    expert_lr: float = 3e-4
    replay: float = 0.0  # fraction of expert batches drawn from the other skills
    expert_seed: int = 100


def train_phase(
    model, phase: Phase, splits: Splits, log_every: int = 100, tag: str = "", eval_every: int = 0
) -> None:
    sampler = Sampler(splits, phase.mix, phase.seed)
    torch.manual_seed(phase.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=phase.lr, betas=(0.9, 0.98), weight_decay=phase.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < phase.warmup:
            return phase.lr * (step + 1) / phase.warmup
        t = (step - phase.warmup) / max(1, phase.steps - phase.warmup)
        return phase.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    t0 = time.time()
    for step in range(phase.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        ids, mask, labels = sampler.batch(phase.batch)
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log_every and (step % log_every == 0 or step == phase.steps - 1):
            print(f"[{tag}] step {step:5d} loss {out.loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
        if eval_every and (step + 1) % eval_every == 0:
            sc = {s: exact_match(model, s, splits.val[s][:100]) for s in SKILLS}
            model.train()
            print(
                f"[{tag}] step {step + 1:5d} val " + " ".join(f"{k}={v:.2f}" for k, v in sc.items()),
                flush=True,
            )
    model.eval()


@torch.no_grad()
def exact_match(model, skill: str, inputs: list[str], max_new: int | None = None) -> float:
    """Greedy decoding without padding (prompts grouped by length); fraction exactly right."""
    model.eval()
    groups: dict[int, list[str]] = {}
    for x in inputs:
        groups.setdefault(len(prompt_of(skill, x)), []).append(x)
    right = 0
    max_new = max_new or LEN_RANGE[1] + 3
    for xs in groups.values():
        ids = torch.tensor([[VOCAB[c] for c in prompt_of(skill, x)] for x in xs])
        start = ids.shape[1]
        for _ in range(max_new):
            nxt = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
        inv = {i: t for t, i in VOCAB.items()}
        for x, row in zip(xs, ids[:, start:].tolist()):
            text = "".join(inv[i] if i >= len(SPECIALS) else "\0" for i in row)
            right += text.split(".")[0].split("\0")[0] == solve(skill, x) and "." in text
    return right / len(inputs)


# --------------------------------------------------------------------------------------------- merges
def task_arithmetic(base: dict, experts: list[dict], lam: float) -> dict:
    return {k: base[k] + lam * sum(e[k] - base[k] for e in experts) for k in base}


def ties(base: dict, experts: list[dict], density: float = 0.2, lam: float = 1.0) -> dict:
    """TIES: trim each task vector to its top-`density` magnitudes, elect signs by summed mass,
    average the agreeing entries (disjoint mean), add lam times the result to the base."""
    out = {}
    for k, b in base.items():
        deltas = []
        for e in experts:
            d = (e[k] - b).float()
            n = d.numel()
            keep = max(1, int(round(density * n)))
            thr = d.abs().flatten().kthvalue(n - keep + 1).values if keep < n else d.abs().min() - 1
            deltas.append(torch.where(d.abs() >= thr, d, torch.zeros_like(d)))
        stack = torch.stack(deltas)
        sign = torch.sign(stack.sum(0))
        agree = (torch.sign(stack) == sign) & (stack != 0)
        num = (stack * agree).sum(0)
        cnt = agree.sum(0).clamp(min=1)
        out[k] = (b.float() + lam * num / cnt).to(b.dtype)
    return out


def merge_table(
    base_sd: dict, experts: dict[str, dict], splits_or_inputs, model_for
) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = []
    inputs = splits_or_inputs

    def score(sd: dict) -> dict:
        m = model_for(sd)
        return {s: exact_match(m, s, inputs[s]) for s in SKILLS}

    rows.append(("base", score(base_sd)))
    for name, sd in experts.items():
        rows.append((f"expert:{name}", score(sd)))
    exs = list(experts.values())
    for lam in (0.3, 0.5, 0.7, 1.0):
        rows.append((f"task_arithmetic lam={lam}", score(task_arithmetic(base_sd, exs, lam))))
    for d, lam in ((0.2, 1.0), (0.5, 1.0), (0.5, 0.7)):
        rows.append((f"ties density={d} lam={lam}", score(ties(base_sd, exs, d, lam))))
    return rows


def print_table(rows: list[tuple[str, dict]]) -> None:
    print(f"{'model':32s} " + " ".join(f"{s:>8s}" for s in SKILLS) + "     mean")
    for name, sc in rows:
        mean = sum(sc.values()) / len(sc)
        print(f"{name:32s} " + " ".join(f"{sc[s]:8.3f}" for s in SKILLS) + f" {mean:8.3f}", flush=True)


# ----------------------------------------------------------------------------------------------- main
def save_model(model, tokenizer, path: Path) -> None:
    from transformers import GenerationConfig

    path.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, do_sample=False, max_new_tokens=12
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def setup_determinism(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    random.seed(0)
    torch.manual_seed(0)


def train_all(
    recipe: Recipe,
    splits: Splits,
    log_every: int = 100,
    eval_every: int = 0,
    base_only: bool = False,
    jobs: int = 1,
):
    """Returns (base_model, {skill: expert_model})."""
    import copy

    base = new_model(recipe.base.seed)
    train_phase(base, recipe.base, splits, log_every, "base", eval_every)
    experts = {}
    if base_only:
        return base, experts
    phases = {}
    for i, skill in enumerate(SKILLS):
        others = [s for s in SKILLS if s != skill]
        mix = {skill: 1.0 - recipe.replay, **{o: recipe.replay / len(others) for o in others}}
        phases[skill] = Phase(
            steps=recipe.expert_steps,
            lr=recipe.expert_lr,
            mix=mix,
            seed=recipe.expert_seed + i,
            batch=recipe.base.batch,
            warmup=20,
        )
    if jobs > 1:
        # one single-threaded process per expert (fork): same numbers as sequential, faster on >1 core
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        with ctx.Pool(min(jobs, len(SKILLS))) as pool:
            sds = pool.starmap(
                _train_expert, [(base.state_dict(), phases[s], splits, log_every, s) for s in SKILLS]
            )
        for skill, sd in zip(SKILLS, sds):
            m = copy.deepcopy(base)
            m.load_state_dict(sd, strict=True)
            experts[skill] = m.eval()
    else:
        for skill in SKILLS:
            m = copy.deepcopy(base)
            train_phase(m, phases[skill], splits, log_every, skill)
            experts[skill] = m
    return base, experts


def _train_expert(base_sd: dict, phase: Phase, splits: Splits, log_every: int, tag: str) -> dict:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    m = new_model(0)
    m.load_state_dict(base_sd, strict=True)
    train_phase(m, phase, splits, log_every, tag)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE, help="writes OUT/{base,add,reverse,sort}")
    ap.add_argument("--task-data", type=Path, default=DEFAULT_TASK_DATA)
    ap.add_argument("--base-steps", type=int, default=Recipe().base.steps)
    ap.add_argument("--base-lr", type=float, default=Recipe().base.lr)
    ap.add_argument("--base-mix", default="3,1,0.5", help="add,reverse,sort weights of the base mix")
    ap.add_argument("--expert-steps", type=int, default=Recipe().expert_steps)
    ap.add_argument("--expert-lr", type=float, default=Recipe().expert_lr)
    ap.add_argument("--replay", type=float, default=Recipe().replay)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (fixed for determinism)")
    ap.add_argument("--no-save", action="store_true", help="train and report only (for tuning)")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--len", default="3,6", help="min,max letters of reverse/sort inputs")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--base-only", action="store_true")
    ap.add_argument("--jobs", type=int, default=3, help="experts trained in parallel processes (same result)")
    ap.add_argument("--data-only", action="store_true", help="write the task data (test + val splits) only")
    args = ap.parse_args(argv)
    if args.data_only:
        LEN_RANGE[:] = [int(v) for v in args.len.split(",")]
        write_task_data(make_splits(), args.task_data)
        print(f"wrote test and validation task data to {args.task_data}", flush=True)
        return 0

    setup_determinism(args.threads)
    LEN_RANGE[:] = [int(v) for v in args.len.split(",")]
    mix = dict(zip(SKILLS, (float(v) for v in args.base_mix.split(","))))
    recipe = Recipe(
        base=Phase(steps=args.base_steps, lr=args.base_lr, mix=mix, seed=1, batch=args.batch),
        expert_steps=args.expert_steps,
        expert_lr=args.expert_lr,
        replay=args.replay,
    )
    print("recipe:", json.dumps(asdict(recipe)), flush=True)
    t0 = time.time()
    splits = make_splits()
    base, experts = train_all(
        recipe, splits, eval_every=args.eval_every, base_only=args.base_only, jobs=args.jobs
    )
    print(f"training took {time.time() - t0:.0f}s", flush=True)

    if not args.no_save:
        tok = make_tokenizer()
        save_model(base, tok, args.out / "base")
        for skill, m in experts.items():
            save_model(m, tok, args.out / skill)
        write_task_data(splits, args.task_data)
        (args.out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
        print(f"saved to {args.out} and {args.task_data}", flush=True)

    if not args.no_eval and not args.base_only:
        from transformers import LlamaForCausalLM

        shell = LlamaForCausalLM(make_config()).eval()

        def model_for(sd: dict):
            shell.load_state_dict(sd, strict=True)
            return shell

        sds = {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in experts.items()}
        base_sd = {n: t.detach().clone() for n, t in base.state_dict().items()}
        print("validation exact match (greedy):")
        print_table(merge_table(base_sd, sds, splits.val, model_for))
    print(f"total {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
