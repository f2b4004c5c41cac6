"""Per-model calibration statistics on a Hugging Face causal LM, computed in passes over groups of
layers so memory stays bounded: Gram matrices of linear-layer inputs (RegMean) and diagonal Fisher
information (Fisher merging). Each pass hands its finished tensors to `sink` and drops them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

import torch

Sink = Callable[[str, torch.Tensor], None]
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def layer_of(name: str) -> int | None:
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def passes(names: Sequence[str], layers_per_pass: int | None) -> list[list[str]]:
    """Names grouped by decoder layer, `layers_per_pass` layers a pass; names outside the layers
    (embeddings, final norm, head) form a last pass of their own."""
    if layers_per_pass is None:
        return [list(names)]
    by_layer: dict[int, list[str]] = {}
    other: list[str] = []
    for n in names:
        layer = layer_of(n)
        (other if layer is None else by_layer.setdefault(layer // layers_per_pass, [])).append(n)
    groups = [by_layer[k] for k in sorted(by_layer)]
    return groups + ([other] if other else [])


def batches(sequences: Sequence[Sequence[int]], size: int, pad_id: int, device) -> Iterator[tuple]:
    for start in range(0, len(sequences), size):
        chunk = sequences[start : start + size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        yield ids.to(device), mask.to(device)


def linear_modules(model) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def shared_inputs(model, sequence: Sequence[int], device) -> dict[str, str]:
    """Linear module -> the first module fed the very same input tensor (q/k/v share one input, so
    they share one Gram matrix: computed and stored once)."""
    owner: dict[int, str] = {}
    group: dict[str, str] = {}
    keep: list[torch.Tensor] = []  # hold inputs alive so their ids stay unique during the forward

    def hook(name):
        def fn(_module, args):
            x = args[0]
            keep.append(x)
            group[name] = owner.setdefault(id(x), name)

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in linear_modules(model).items()]
    try:
        with torch.no_grad():
            model(torch.tensor([list(sequence)], device=device))
    finally:
        for h in handles:
            h.remove()
    return group


def _gram_pass(model, modules: list, sequences, batch_size: int, device) -> list[torch.Tensor]:
    """sum X^T X of each module's unpadded inputs over all calibration batches (one forward each)."""
    grams: list[torch.Tensor | None] = [None] * len(modules)
    mask = torch.empty(0, dtype=torch.bool)

    def hook(i: int):
        def fn(_module, args):
            x = args[0].reshape(-1, args[0].shape[-1])[mask].to(torch.float32)
            g = grams[i]
            grams[i] = x.T @ x if g is None else g.addmm_(x.T, x)

        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            for ids, attention in batches(sequences, batch_size, 0, device):
                mask = attention.reshape(-1).bool()
                model(input_ids=ids, attention_mask=attention)
    finally:
        for h in handles:
            h.remove()
    return [g for g in grams if g is not None]


def gram_matrices(
    model, sequences: Sequence[Sequence[int]], *, batch_size: int, layers_per_pass: int | None, sink: Sink
) -> dict[str, str]:
    """sink(module_name, G) for each distinct linear input: G = X^T X / n over the n real (unpadded)
    calibration tokens, accumulated in float32. Returns linear module -> the module whose Gram it
    shares."""
    device = next(model.parameters()).device
    groups = shared_inputs(model, sequences[0], device)
    owners = sorted(set(groups.values()), key=list(groups).index)
    modules = linear_modules(model)
    n_tokens = sum(len(s) for s in sequences)
    for names in passes(owners, layers_per_pass):
        grams = _gram_pass(model, [modules[n] for n in names], sequences, batch_size, device)
        for name, gram in zip(names, grams):
            sink(name, gram.div_(n_tokens))
        del grams
    return groups


def fisher_diagonals(
    model, sequences: Sequence[Sequence[int]], *, layers_per_pass: int | None, sink: Sink
) -> None:
    """sink(parameter_name, F) with F = mean over sequences of (d/dtheta sum_t log p(y_t | x_<=t))^2,
    where y_t is the model's own greedy prediction after each prefix. One sequence per backward pass
    (per-example gradients); only the current pass's parameters take gradients."""
    device = next(model.parameters()).device
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(False)
    for names in passes(list(params), layers_per_pass):
        for n in names:
            params[n].requires_grad_(True)
        sums = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
        for seq in sequences:
            ids = torch.tensor([list(seq)], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            predicted = logp.argmax(dim=-1)
            loglik = logp.gather(1, predicted[:, None]).sum()
            grads = torch.autograd.grad(loglik, [params[n] for n in names], allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    sums[n].add_(g.float().square())
        for n in names:
            params[n].requires_grad_(False)
            sink(n, sums.pop(n).div_(len(sequences)))
