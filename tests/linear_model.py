"""A causal "language model" that is LINEAR in its input embeddings, with the interface ModelRunner uses.

hidden[t] = sum over unmasked t' <= t of x[t'] @ mix  (a causal running sum), logits = hidden @ head.
Option margins (differences of log-probabilities = differences of logits) are then linear in the
input embeddings, so first-order estimates of them must be exact.
"""

from types import SimpleNamespace

import torch
from transformers import DynamicCache


class LinearBase(torch.nn.Module):
    def __init__(self, embed: torch.nn.Embedding, dim: int):
        super().__init__()
        self.embed = embed
        self.mix = torch.nn.Parameter(torch.randn(dim, dim, dtype=torch.float64) / dim ** 0.5)

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, cache=None, use_cache=False):
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds  # [B, L, d]
        past = None
        if cache is not None and len(cache.layers) and cache.layers[0].keys is not None:
            past = cache.layers[0].keys[:, 0]  # [B, P, d]: the prefix's (masked) embeddings
        mask = torch.ones(x.shape[:2], dtype=x.dtype) if attention_mask is None else attention_mask[:, -x.shape[1]:].to(x.dtype)
        x = x * mask[..., None]
        if past is not None:
            x = torch.cat([past.expand(x.shape[0], -1, -1), x], dim=1)
        hidden = torch.cumsum(x, dim=1) @ self.mix
        new_cache = DynamicCache(ddp_cache_data=[(x[:, None], x[:, None])])
        if past is not None:
            hidden = hidden[:, past.shape[1]:]
        return SimpleNamespace(last_hidden_state=hidden, cache=new_cache)


class LinearLM(torch.nn.Module):
    def __init__(self, vocab_size: int, dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab_size, dim).double()
        self.base_model = LinearBase(self.embed, dim)
        self.head = torch.nn.Linear(dim, vocab_size, bias=False).double()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head
