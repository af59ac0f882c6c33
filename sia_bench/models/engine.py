"""Prefill once, reuse everywhere: the inference engine behind :class:`~sia_bench.models.hf.HFModel`.

Why not ``transformers.generate``: on a compute-bound CPU the prompt is ~97% of the tokens, so the saving must come
from never computing a prompt token twice. Here

* a prompt is prefilled **once, alone, without padding**, keeping only the last position's logits; its KV state can
  start from a cached shared prefix (the system block: SKILL.md plus instance-independent tool text), which
  :class:`PrefixStore` keeps per weights version;
* ranking scores every option on top of the prompt's KV state in one row (a tree mask), never re-running it;
* decoding stacks the prefilled rows (left-padded *inside the cache*, masked) and can repeat each row ``n`` times,
  so a GRPO group shares one prefill.

Everything runs under ``torch.no_grad`` on the model's device and dtype; scores and sampling use float32 logits.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch
from transformers import DynamicCache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [1, heads, length, head_dim]


@dataclass
class Prefill:
    """A prompt after its forward pass: its tokens, its KV state and the logits of the next token."""

    ids: list[int]
    kv: KV
    logits: torch.Tensor  # [vocab], float32


class PrefixStore:
    """A small LRU of prefilled shared prefixes, keyed by (weights version, token ids)."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Prefill] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Prefill | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def put(self, key: Hashable, item: Prefill) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


def _cache(kv: KV | None) -> DynamicCache:
    return DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()


@torch.no_grad()
def prefill(hf: Any, ids: Sequence[int], device: Any, base: Prefill | None = None) -> Prefill:
    """Run the tokens of ``ids`` that ``base`` (a prefilled prefix of them) does not cover; last logits only."""
    start = len(base.ids) if base is not None else 0
    if base is not None and list(ids[:start]) != base.ids:
        raise ValueError("prefill: the cached prefix is not a prefix of the prompt")
    if start == len(ids):
        if base is None:
            raise ValueError("prefill: empty prompt")
        return base
    rest = torch.tensor([list(ids[start:])], device=device)
    positions = torch.arange(start, len(ids), device=device).unsqueeze(0)
    out = hf(input_ids=rest, position_ids=positions, cache=_cache(base.kv if base else None), use_cache=True,
             logits_to_keep=1)
    kv = [(layer.keys, layer.values) for layer in out.cache.layers]
    return Prefill(list(ids), kv, out.logits[0, -1].float())


TREE_TOKENS = 512  # option tokens fed per forward in ranking (a bound on the [T, L + T] mask)


def _option_blocks(options: Sequence[Sequence[int]], budget: int) -> list[list[int]]:
    """Indices of multi-token options, grouped so that each group feeds at most ``budget`` tokens."""
    groups: list[list[int]] = []
    fed = 0
    for i, o in enumerate(options):
        if len(o) < 2:
            continue
        if not groups or fed + len(o) - 1 > budget:
            groups.append([])
            fed = 0
        groups[-1].append(i)
        fed += len(o) - 1
    return groups


@torch.no_grad()
def option_logps(hf: Any, row: Prefill, options: Sequence[Sequence[int]], budget: int = TREE_TOKENS) -> list[float]:
    """Mean per-token log-probability of each option after the prompt, from the prompt's KV state (never re-run).

    All options continue the prompt in one row, as a tree: each option's tokens attend to the whole prompt and to
    their own earlier tokens only (a 4D mask), at the positions they would have alone. One row means the prompt's
    KV state is never copied per option, and the result equals scoring each option on its own."""
    device = row.logits.device
    first = torch.log_softmax(row.logits, -1)
    totals = [first[o[0]].item() for o in options]
    length = len(row.ids)
    for group in _option_blocks(options, budget):
        fed = [list(options[i][:-1]) for i in group]  # the last token of an option predicts nothing we need
        n = sum(map(len, fed))
        ids = torch.tensor([[t for f in fed for t in f]], device=device)
        positions = torch.tensor([[length + j for f in fed for j in range(len(f))]], device=device)
        dtype = row.kv[0][0].dtype
        mask = torch.full((1, 1, n, length + n), torch.finfo(dtype).min, dtype=dtype, device=device)
        mask[..., :length] = 0
        start = 0
        for f in fed:
            block = torch.triu(torch.ones(len(f), len(f), dtype=torch.bool, device=device), 1)
            mask[0, 0, start:start + len(f), length + start:length + start + len(f)].masked_fill_(~block, 0)
            start += len(f)
        logp = torch.log_softmax(hf(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    cache=_cache(row.kv), use_cache=True).logits[0].float(), -1)
        start = 0
        for i, f in zip(group, fed):
            targets = torch.tensor(options[i][1:], device=device)
            totals[i] += logp[torch.arange(start, start + len(f), device=device), targets].sum().item()
            start += len(f)
    return [total / len(o) for total, o in zip(totals, options)]


def _stack(rows: Sequence[Prefill], repeats: int) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch cache from rows of different lengths: each row left-padded inside the cache, padding masked."""
    order = [r for r in rows for _ in range(repeats)]
    longest = max(len(r.ids) for r in order)
    device = order[0].logits.device
    layers = []
    for layer in range(len(order[0].kv)):
        k0, v0 = order[0].kv[layer]
        keys = k0.new_zeros((len(order), k0.shape[1], longest, k0.shape[3]))
        values = v0.new_zeros((len(order), v0.shape[1], longest, v0.shape[3]))
        for b, r in enumerate(order):
            k, v = r.kv[layer]
            keys[b, :, longest - k.shape[2]:] = k[0]
            values[b, :, longest - v.shape[2]:] = v[0]
        layers.append((keys, values))
    mask = torch.zeros(len(order), longest, dtype=torch.long, device=device)
    for b, r in enumerate(order):
        mask[b, longest - len(r.ids):] = 1
    positions = torch.tensor([len(r.ids) for r in order], device=device)
    logits = torch.stack([r.logits for r in order])
    return _cache(layers), mask, positions, logits


def _choose(scores: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
            ) -> torch.Tensor:
    """Greedy argmax at temperature 0; else a sample from softmax(scores / T), nucleus-filtered at top_p."""
    if temperature <= 0:
        return scores.argmax(-1)
    probs = torch.softmax(scores / temperature, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest set whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def decode(hf: Any, rows: Sequence[Prefill], *, max_new_tokens: int, temperature: float, top_p: float, eos: int,
           pad: int, repeats: int = 1, generator: torch.Generator | None = None,
           processor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> list[list[int]]:
    """New tokens for each row (each repeated ``repeats`` times, sharing its prefill), EOS kept when produced.

    ``processor`` is a transformers-style logits processor ``(input_ids, scores) -> scores`` (xgrammar's JSON
    constraint); it sees the prompt (left-padded) plus the tokens so far."""
    cache, mask, positions, logits = _stack(rows, repeats)
    n, device = len(positions), logits.device
    prompt_ids = torch.full((n, mask.shape[1]), pad, dtype=torch.long, device=device)
    for b, r in enumerate(r for r in rows for _ in range(repeats)):
        prompt_ids[b, mask.shape[1] - len(r.ids):] = torch.tensor(r.ids, device=device)
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    seen = prompt_ids
    for step in range(max_new_tokens):
        scores = processor(seen, logits) if processor is not None else logits
        nxt = _choose(scores, temperature, top_p, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        for b in (~done).nonzero().flatten().tolist():
            out[b].append(int(nxt[b]))
        done |= nxt == eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        seen = torch.cat([seen, nxt.unsqueeze(1)], 1)
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], 1)
        result = hf(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=positions.unsqueeze(1),
                    cache=cache, use_cache=True)
        cache = result.cache
        positions = positions + 1
        logits = result.logits[:, -1].float()
    return out
