"""Forward passes for training: one prompt prefix, then the rows that continue it, sharing the prefix's KV cache.

Every group of rollouts shares its prompt (a legal prompt is ~600 tokens; a sampled option or answer is a handful),
so the prefix runs once per group instead of once per row, for sampling, the old-policy pass and the gradient pass.
For the gradient, the prefix's outputs (its KV cache, last logits and last hidden state) are cut from the graph as
leaf tensors; each chunk of rows is run and back-propagated on its own, which accumulates the leaves' gradients,
and :meth:`SharedPrefix.backward` then sends those through the prefix once. The result is the gradient of the plain
full-row computation (tested) with memory bounded by the chunk size instead of rows x prompt length.

Prompts of one harness version also share their leading tokens (the system block: SKILL.md and the tool text), so
a round's prompts can start from one :class:`CommonPrefix` run over those tokens: its KV state is cut from the graph
the same way, every prompt's :class:`SharedPrefix` continues it, and :meth:`CommonPrefix.backward` sends the
gathered gradients through the shared tokens once per minibatch instead of once per prompt. Causal attention makes
this exact: a token's keys and values depend only on the tokens before it.

This is the training-side twin of the model's option ranker (``HFModel.loglikelihood``); it lives here because it
needs gradients through the cache, which the model's no-grad scoring path does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

ROW_TOKENS = 2048  # rows x length per forward of continuation rows (gradients accumulate across chunks)


@dataclass
class RowOutputs:
    """Per row token: the logits that predict it, the hidden state they come from, and the token itself."""

    logits: torch.Tensor  # (B, L, V) float32
    hidden: torch.Tensor | None  # (B, L, H) float32: the value head's input for the state before each token
    tokens: torch.Tensor  # (B, L), right-padded with 0
    mask: torch.Tensor  # (B, L) float32, 1 for real tokens

    def token_logps(self, temperature: float = 1.0) -> torch.Tensor:
        """log p(token) under softmax(logits / temperature), (B, L); padded positions hold 0."""
        logp = torch.log_softmax(self.logits / temperature, -1)
        return logp.gather(-1, self.tokens.unsqueeze(-1)).squeeze(-1) * self.mask

    def token_entropy(self, temperature: float = 1.0) -> torch.Tensor:
        logp = torch.log_softmax(self.logits / temperature, -1)
        return -(logp.exp() * logp).sum(-1) * self.mask

    def mean_logps(self) -> torch.Tensor:
        """The ranker's score of each row: its mean token log-probability at temperature 1, (B,)."""
        return self.token_logps(1.0).sum(1) / self.mask.sum(1)


def make_value_head(hidden_size: int, device: Any) -> torch.nn.Linear:
    """A linear value head on the last hidden state, fp32, zero-initialised (V = 0 until trained: the first
    advantages are the whitened rewards and the value loss does not push on the LoRA at the start)."""
    head = torch.nn.Linear(hidden_size, 1, device=device, dtype=torch.float32)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def hidden_size(hf: Any) -> int:
    return int(hf.config.get_text_config().hidden_size) if hasattr(hf.config, "get_text_config") else int(
        hf.config.hidden_size)


MIN_COMMON = 16  # shorter common prefixes are not worth a separate pass


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (0 for fewer than 2 prompts or
    a common part under MIN_COMMON tokens)."""
    if len(prompts) < 2:
        return 0
    limit = min(map(len, prompts)) - 1
    n = 0
    first = prompts[0]
    while n < limit and all(p[n] == first[n] for p in prompts[1:]):
        n += 1
    return n if n >= MIN_COMMON else 0


class CommonPrefix:
    """The KV state of tokens several prompts share, run once; gradients follow torch's grad mode."""

    def __init__(self, hf: Any, ids: Sequence[int], device: Any):
        self.ids = list(ids)
        self.grad = torch.is_grad_enabled()
        out = hf(input_ids=torch.tensor([self.ids], device=device), use_cache=True, logits_to_keep=1)
        self._sources = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        self._leaves = [t.detach().requires_grad_() for t in self._sources] if self.grad else self._sources
        self.kv = list(zip(self._leaves[0::2], self._leaves[1::2]))

    @classmethod
    def of(cls, hf: Any, prompts: Sequence[Sequence[int]], device: Any) -> "CommonPrefix | None":
        n = common_prefix_length(prompts)
        return cls(hf, prompts[0][:n], device) if n else None

    def backward(self) -> None:
        """Send the gradients the prompts gathered on the shared KV through the shared tokens (once)."""
        _send(self._sources, self._leaves, self.grad)


def _send(sources: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], grad: bool) -> None:
    if not grad:
        return
    pairs = [(src, leaf.grad) for src, leaf in zip(sources, leaves) if leaf.grad is not None and src.requires_grad]
    if pairs:
        torch.autograd.backward([s for s, _ in pairs], [g for _, g in pairs])


class SharedPrefix:
    """Run ``prefix_ids`` once (continuing ``base`` when given, a :class:`CommonPrefix` of its first tokens);
    :meth:`rows` continues it with any rows. Gradients follow torch's grad mode."""

    def __init__(self, hf: Any, prefix_ids: Sequence[int], device: Any, need_hidden: bool = False,
                 base: CommonPrefix | None = None):
        if not prefix_ids:
            raise ValueError("a training prompt rendered to zero tokens")
        self.hf, self.device, self.need_hidden = hf, device, need_hidden
        self.length = len(prefix_ids)
        self.grad = torch.is_grad_enabled()
        start = len(base.ids) if base is not None else 0
        if base is not None and (start >= self.length or list(prefix_ids[:start]) != base.ids):
            raise ValueError("SharedPrefix: the common prefix is not a proper prefix of this prompt")
        from transformers import DynamicCache

        extra = {} if base is None else {
            "cache": DynamicCache(ddp_cache_data=base.kv),
            "position_ids": torch.arange(start, self.length, device=device).unsqueeze(0)}
        out = hf(input_ids=torch.tensor([list(prefix_ids[start:])], device=device), use_cache=True,
                 logits_to_keep=1, output_hidden_states=need_hidden, **extra)
        self._sources = [out.logits[0, -1].float()]
        if need_hidden:
            self._sources.append(out.hidden_states[-1][0, -1].float())
        kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        self._sources += [t for pair in kv for t in pair]
        self._leaves = [t.detach().requires_grad_() for t in self._sources] if self.grad else self._sources
        n_head = 2 if need_hidden else 1
        self.last_logits = self._leaves[0]
        self.last_hidden = self._leaves[1] if need_hidden else None
        flat = self._leaves[n_head:]
        self._kv = list(zip(flat[0::2], flat[1::2]))

    def rows(self, rows: Sequence[Sequence[int]]) -> RowOutputs:
        """Logits (and hidden states) predicting every token of every row after the prefix."""
        from transformers import DynamicCache

        width = max(map(len, rows))
        tokens = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        mask = torch.zeros((len(rows), width), dtype=torch.float32, device=self.device)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = torch.tensor(list(row), device=self.device)
            mask[i, :len(row)] = 1.0
        n = len(rows)
        first_logits = self.last_logits.expand(n, 1, -1)
        first_hidden = self.last_hidden.expand(n, 1, -1) if self.need_hidden else None
        if width == 1:  # one-token rows: the prefix's last position predicts them all
            return RowOutputs(first_logits, first_hidden, tokens, mask)
        # Row inputs are every token but the last (whose successor is never scored); pads after a row's end are
        # attended to by nothing real, so a mask of ones is exact.
        cache = DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in self._kv])
        positions = (self.length + torch.arange(width - 1, device=self.device)).expand(n, -1)
        out = self.hf(input_ids=tokens[:, :-1], attention_mask=torch.ones((n, self.length + width - 1),
                                                                          dtype=torch.long, device=self.device),
                      position_ids=positions, cache=cache, output_hidden_states=self.need_hidden)
        logits = torch.cat([first_logits, out.logits.float()], 1)
        hidden = torch.cat([first_hidden, out.hidden_states[-1].float()], 1) if self.need_hidden else None
        return RowOutputs(logits, hidden, tokens, mask)

    def backward(self) -> None:
        """Send the gradients gathered on the prefix's outputs through the prefix (once, after all chunks)."""
        _send(self._sources, self._leaves, self.grad)


def row_chunks(rows: Sequence[Sequence[int]], budget: int | None = None) -> list[list[int]]:
    """Indices of rows split so that rows x padded row length stays near ``budget`` tokens per forward."""
    budget = budget or ROW_TOKENS
    width = max(map(len, rows))
    per = max(1, budget // max(width, 1))
    return [list(range(s, min(s + per, len(rows)))) for s in range(0, len(rows), per)]
