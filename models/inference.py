"""Running the model on natural prompts: exact option scores, anchor gradients, hidden-state embeddings.

Every prompt is  prefix (specials + the demos, P tokens)  +  continuation (query [+ option]), tokenised whole
(layout.Layout.prompt: the prefix is what every query row of the set shares).
When all options are single tokens one row per query scores every option from one logit vector;
otherwise there is one row per (query, option) and an option's score is the sum of its tokens'
log-probabilities, or their mean (the layout's option_score "mean": length-normalised). The prefix is
shared: run once, its key/value cache expanded over a batch of continuations. Passes are counted in prompts
(rows) and in tokens actually computed.
"""

from __future__ import annotations

import inspect
import math
import threading

from dataclasses import dataclass, field
from typing import Callable, TypeVar

import torch
from transformers import DynamicCache

from .anchor import AnchorTensors
from .layout import Layout, Prompt
from .outcome import query_losses

T = TypeVar("T")


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32 for scores and gradients; fp32/fp64 unchanged."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class PassBudgetExhausted(RuntimeError):
    """A model call would take the job past its max_passes (nothing of it ran)."""


@dataclass
class PassCounter:
    forward: int = 0  # prompts run forward
    backward: int = 0  # prompts back-propagated (one per output differentiated)
    tokens_forward: int = 0
    tokens_backward: int = 0
    sentence_texts: int = 0  # texts embedded by the sentence model (retrieval): not passes of the language model
    limit: int | None = None  # max forward-equivalents (request.max_passes); None: no limit
    # forward passes that stopped after an early layer, in full passes (8 of 30 layers: 8/30 each); forward holds
    # them rounded up, as a whole
    partial_forward: float = 0.0

    @property
    def forward_equivalent(self) -> int:
        return self.forward + 2 * self.backward

    def reserve(self, cost: int) -> None:
        """Called before a model call of ``cost`` forward-equivalents: PassBudgetExhausted if it would pass the limit."""
        if self.limit is not None and self.forward_equivalent + cost > self.limit:
            raise PassBudgetExhausted(f"{cost} more passes would exceed max_passes = {self.limit} "
                                      f"({self.forward_equivalent} spent)")

    def partial_cost(self, passes: float) -> int:
        """What ``passes`` more partial forward passes add to forward (partial_forward rounded up, as a whole)."""
        return _ceil(self.partial_forward + passes) - _ceil(self.partial_forward)

    def add_partial(self, passes: float) -> None:
        self.forward += self.partial_cost(passes)
        self.partial_forward += passes

    def as_dict(self) -> dict:
        return {"forward": self.forward, "backward": self.backward,
                "forward_equivalent": self.forward_equivalent,
                "tokens_forward": self.tokens_forward, "tokens_backward": self.tokens_backward,
                "sentence_texts": self.sentence_texts}


def layer_share(layer: int | None, n_layers: int) -> float:
    """The share of a forward pass a row costs when the model stops after decoder layer ``layer`` of ``n_layers``
    (None: the last hidden state, a whole pass): what an early-stopped embedding is charged and priced at."""
    return 1.0 if layer is None else layer / n_layers


def _ceil(passes: float) -> int:
    return math.ceil(passes - 1e-9)  # 30 rows at 8/30 are 8 passes, not 9 by a rounding error


def with_cost(counter: PassCounter, compute: Callable[[], T]) -> tuple[T, torch.Tensor]:
    """(compute(), the forward-equivalents it ran, as a 0-d tensor): cached with what it computed, so that whoever
    finds the entry in the cache can charge the work it stands for (SelectionContext.work)."""
    before = counter.forward_equivalent
    value = compute()
    return value, torch.tensor(counter.forward_equivalent - before)


@dataclass
class Rows:
    """Continuations for a set of queries. targets[r] = [(position, token, option)]: the logits at
    ``position`` of row r predict ``token``, which counts towards ``option``'s score."""
    tokens: list[list[int]] = field(default_factory=list)
    query: list[int] = field(default_factory=list)  # local query index of each row
    targets: list[list[tuple[int, int, int]]] = field(default_factory=list)


def build_rows(layout: Layout, continuations: list[list[int]]) -> Rows:
    """Rows scoring every option after each query's continuation tokens (its prompt after the shared prefix)."""
    rows = Rows()
    single_token = layout.single_token_options
    for local, query_ids in enumerate(continuations):
        if single_token:
            last = len(query_ids) - 1
            rows.tokens.append(query_ids)
            rows.query.append(local)
            rows.targets.append([(last, ids[0], o) for o, ids in enumerate(layout.option_ids)])
            continue
        for o, ids in enumerate(layout.option_ids):
            rows.tokens.append(query_ids + ids[:-1])
            rows.query.append(local)
            rows.targets.append([(len(query_ids) - 1 + j, token, o) for j, token in enumerate(ids)])
    return rows


class ModelRunner:
    """Runs one model on one layout; ``checkpoint()`` is called between batches (it may raise to cancel)."""

    def __init__(self, model: torch.nn.Module, layout: Layout, batch_size: int = 8,
                 checkpoint: Callable[[], None] = lambda: None, counter: PassCounter | None = None):
        self.model = model
        self.base = model.base_model  # the decoder without the LM head: [B, L] -> hidden [B, L, d]
        self.head = model.get_output_embeddings()  # hidden [.., d] -> logits [.., V]
        self.embed = model.get_input_embeddings()
        self.layout = layout
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        self.counter = counter or PassCounter()
        self.device = self.embed.weight.device
        self.pad_id = layout.pad_id
        # the decoder's cache argument: "cache" from transformers 5.25, "past_key_values" before
        self._cache_argument = "cache" if "cache" in inspect.signature(self.base.forward).parameters \
            else "past_key_values"

    @property
    def _option_lengths(self) -> torch.Tensor:
        """[O] tokens of each option."""
        return torch.tensor([len(ids) for ids in self.layout.option_ids], device=self.device)

    # ---------- batching helpers ----------
    @property
    def rows_per_query(self) -> int:
        """Forward rows one query takes: one when every option is a single token, else one per option."""
        return 1 if self.layout.single_token_options else self.layout.n_options

    def exact_cost(self, n_queries: int) -> int:
        """Forward-equivalents of exact_scores on ``n_queries`` queries."""
        return n_queries * self.rows_per_query

    def anchor_cost(self, mode: str, n_queries: int) -> int:
        """Forward-equivalents of an anchor pass on ``n_queries`` queries: each row forward once and back-propagated
        once (mean loss) or once per option but the gold one (margins), a backward counting twice."""
        backward_per_row = 1 if mode == "mean-loss" else self.layout.n_options - 1
        return n_queries * self.rows_per_query * (1 + 2 * backward_per_row)

    def _query_batches(self, queries: list):
        step = max(1, self.batch_size // self.rows_per_query)
        for start in range(0, len(queries), step):
            self.checkpoint()
            yield start, queries[start:start + step]

    def _batches(self, prompt: Prompt):
        """(start, local query indices, their Rows) per batch of a prompt's query rows."""
        for start, local in self._query_batches(list(range(len(prompt.rows)))):
            yield start, local, build_rows(self.layout, [prompt.rows[i] for i in local])

    def _pad(self, token_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad with attention mask 0 (pads come after every real token, so they change nothing)."""
        width = max(len(tokens) for tokens in token_lists)
        ids = torch.full((len(token_lists), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_lists), width), dtype=torch.long)
        for row, tokens in enumerate(token_lists):
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :len(tokens)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _scores(self, hidden: torch.Tensor, rows: Rows, offset: int, n_queries: int) -> torch.Tensor:
        """hidden [B, L, d] of the continuation rows -> option scores [n_queries, O]."""
        positions = [(r, offset + pos, token, rows.query[r], o)
                     for r, targets in enumerate(rows.targets) for pos, token, o in targets]
        row_index = torch.tensor([p[0] for p in positions], device=hidden.device)
        pos_index = torch.tensor([p[1] for p in positions], device=hidden.device)
        log_probs = torch.log_softmax(_at_least_float32(self.head(hidden[row_index, pos_index])), dim=-1)  # [T, V]
        token_lp = log_probs[torch.arange(len(positions), device=hidden.device),
                             torch.tensor([p[2] for p in positions], device=hidden.device)]
        flat = torch.tensor([p[3] * self.layout.n_options + p[4] for p in positions], device=hidden.device)
        scores = token_lp.new_zeros(n_queries * self.layout.n_options)
        scores = scores.index_add(0, flat, token_lp).view(n_queries, -1)  # [Q, O] summed log-probabilities
        if self.layout.option_score == "mean":
            scores = scores / self._option_lengths.to(scores)  # [Q, O] / [O]
        return scores

    def _prefix_cache(self, prefix_ids: torch.Tensor | None = None, prefix_embeds: torch.Tensor | None = None):
        """Run the prefix once; return its per-layer (keys, values), each [1, heads, P, head_dim]."""
        out = self.base(input_ids=prefix_ids, inputs_embeds=prefix_embeds, use_cache=True)
        size = prefix_ids.shape[-1] if prefix_ids is not None else prefix_embeds.shape[1]
        self.counter.tokens_forward += size
        cache = out.cache if hasattr(out, "cache") else out.past_key_values  # transformers < 5.25 names it so
        return [(layer.keys, layer.values) for layer in cache.layers], size

    def _continue(self, prefix_kv, prefix_len: int, rows: Rows) -> torch.Tensor:
        """Hidden states [B, L, d] of continuation rows after a shared prefix."""
        ids, mask = self._pad(rows.tokens)
        batch = ids.shape[0]
        cache = DynamicCache(ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix_kv])
        full_mask = torch.cat([torch.ones((batch, prefix_len), dtype=mask.dtype, device=mask.device), mask], dim=1)
        self.counter.forward += batch
        self.counter.tokens_forward += int(mask.sum())
        return self.base(input_ids=ids, attention_mask=full_mask, use_cache=True,
                         **{self._cache_argument: cache}).last_hidden_state

    # ---------- exact inference ----------
    @torch.no_grad()
    def exact_scores(self, subset: list[int], queries: list[int], share_prefix: bool = True) -> torch.Tensor:
        """Option scores [len(queries), O] of the natural prompts with demos ``subset`` (in prompt order)."""
        self.counter.reserve(self.exact_cost(len(queries)))
        prompt = self.layout.prompt(subset, queries)
        prefix = torch.tensor(prompt.prefix, dtype=torch.long, device=self.device)
        parts = []
        if share_prefix:
            prefix_kv, prefix_len = self._prefix_cache(prefix_ids=prefix[None])
        for _, batch, rows in self._batches(prompt):
            if share_prefix:
                hidden = self._continue(prefix_kv, prefix_len, rows)
                parts.append(self._scores(hidden, rows, 0, len(batch)))
            else:
                full = Rows([prefix.tolist() + tokens for tokens in rows.tokens], rows.query, rows.targets)
                ids, mask = self._pad(full.tokens)
                self.counter.forward += ids.shape[0]
                self.counter.tokens_forward += int(mask.sum())
                hidden = self.base(input_ids=ids, attention_mask=mask).last_hidden_state
                parts.append(self._scores(hidden, rows, len(prefix), len(batch)))
        return torch.cat(parts).cpu()

    # ---------- anchor gradients ----------
    def _slots(self, grad: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
        """[..., P, d] gradient over the prefix -> [..., k, W, d]: for each demo, the gradient at the W positions
        that end with its last token (the frame of estimate.slot_contributions, W the layout's width). A candidate
        demo's tokens are right-aligned in it: a longer one reaches into positions before the anchor's demo, a
        shorter one leaves some of the anchor's tokens with nothing in their place. Zero before the prompt starts
        and past the prefix (tokens that a query row merged with are not shared)."""
        width, prefix_len = self.layout.width, grad.shape[-2]
        slots = grad.new_zeros(grad.shape[:-2] + (len(spans), width, grad.shape[-1]))
        for s, (_, end) in enumerate(spans):
            low, high = max(end - width, 0), min(end, prefix_len)
            if high > low:
                slots[..., s, width - (end - low):width - (end - high), :] = grad[..., low:high, :]
        return slots

    def anchor_mean_loss(self, subset: list[int], queries: list[int]) -> AnchorTensors:
        """Scores [Q, O] at the anchor and the gradient [k, W, d] of the SUMMED loss over the queries
        with respect to the demo-slot input embeddings. The prefix runs forward once; each batch of
        queries back-propagates into detached copies of the prefix keys/values only, and one backward
        through the prefix at the end turns their summed gradients into the embedding gradient."""
        prompt = self.layout.prompt(subset, queries)
        prefix = torch.tensor(prompt.prefix, dtype=torch.long, device=self.device)
        prefix_embeds = self.embed(prefix)[None].detach().requires_grad_(True)  # [1, P, d] leaf
        with torch.enable_grad():
            prefix_kv, prefix_len = self._prefix_cache(prefix_embeds=prefix_embeds)  # in the graph
        kv_leaves = [(k.detach().requires_grad_(True), v.detach().requires_grad_(True)) for k, v in prefix_kv]
        gold = self.layout.gold[queries].to(self.device)
        parts = []
        for start, batch, rows in self._batches(prompt):
            with torch.enable_grad():
                scores = self._scores(self._continue(kv_leaves, prefix_len, rows), rows, 0, len(batch))
                query_losses(scores, gold[start:start + len(batch)]).sum().backward()
            self.counter.backward += len(rows.tokens)
            self.counter.tokens_backward += sum(len(t) for t in rows.tokens)
            parts.append(scores.detach())
        outputs = [t for pair in prefix_kv for t in pair]
        grads = [t.grad for pair in kv_leaves for t in pair]
        torch.autograd.backward(outputs, grads)  # one backward through the prefix
        self.counter.tokens_backward += prefix_len
        grad = self._slots(prefix_embeds.grad[0], prompt.spans)  # [k, W, d]
        return AnchorTensors(torch.cat(parts).cpu(), grad_loss_sum=_at_least_float32(grad.detach()).cpu())

    def anchor_label_groups(self, subset: list[int], queries: list[int]) -> AnchorTensors:
        """Scores [Q, O] and, for each gold label g and option o, the gradient of the summed margin
        sum_{q: gold=g} (score[q, o] - score[q, g]) w.r.t. the demo-slot embeddings: grad_margins
        [G=O, O, k, W, d], with row_of_query [Q] (= gold) and row_count [G] (queries per label).
        Estimates shift each query's margins by its label group's mean shift, then apply the loss
        exactly, so the loss's curvature in the margins is kept (a first-order estimate of the mean
        loss itself is biased towards big moves). Cost: the prefix forward is shared; each query row
        back-propagates O-1 times into detached prefix keys/values; then O(O-1) backwards through the
        prefix alone."""
        prompt = self.layout.prompt(subset, queries)
        prefix = torch.tensor(prompt.prefix, dtype=torch.long, device=self.device)
        n_opt = self.layout.n_options
        prefix_embeds = self.embed(prefix)[None].detach().requires_grad_(True)  # [1, P, d] leaf
        with torch.enable_grad():
            prefix_kv, prefix_len = self._prefix_cache(prefix_embeds=prefix_embeds)
        kv_leaves = [t.detach().requires_grad_(True) for pair in prefix_kv for t in pair]
        kv_pairs = list(zip(kv_leaves[0::2], kv_leaves[1::2]))
        gold = self.layout.gold[queries]
        kv_grads: dict[tuple[int, int], list[torch.Tensor]] = {}
        scores = torch.zeros((len(queries), n_opt), dtype=torch.float64)
        for label in range(n_opt):
            members = [i for i in range(len(queries)) if int(gold[i]) == label]  # batches of one label each
            for _, local in self._query_batches(members):
                rows = build_rows(self.layout, [prompt.rows[i] for i in local])
                with torch.enable_grad():
                    batch_scores = self._scores(self._continue(kv_pairs, prefix_len, rows), rows, 0, len(local))
                    margins = batch_scores - batch_scores[:, label:label + 1]  # [b, O], 0 at the gold label
                    others = [o for o in range(n_opt) if o != label]
                    for position, o in enumerate(others):
                        grads = torch.autograd.grad(margins[:, o].sum(), kv_leaves, retain_graph=position < len(others) - 1,
                                                    allow_unused=True, materialize_grads=True)
                        total = kv_grads.setdefault((label, o), [torch.zeros_like(t) for t in kv_leaves])
                        for acc, grad in zip(total, grads):
                            acc += grad
                self.counter.backward += len(rows.tokens) * len(others)
                self.counter.tokens_backward += sum(len(t) for t in rows.tokens) * len(others)
                scores[local] = batch_scores.detach().double().cpu()
        outputs = [t for pair in prefix_kv for t in pair]
        grad = torch.zeros((n_opt, n_opt, prefix_len, prefix_embeds.shape[-1]), dtype=prefix_embeds.dtype)
        pairs = list(kv_grads.items())
        for position, ((label, o), total) in enumerate(pairs):
            (embed_grad,) = torch.autograd.grad(outputs, prefix_embeds, total, retain_graph=position < len(pairs) - 1)
            grad[label, o] = embed_grad[0].cpu()
            self.counter.tokens_backward += prefix_len
        return AnchorTensors(scores.to(_at_least_float32(prefix_embeds).dtype),
                             grad_margins=_at_least_float32(self._slots(grad, prompt.spans)),
                             reference=gold.clone(), row_of_query=gold.clone(),
                             row_count=torch.bincount(gold, minlength=n_opt).to(torch.float64))

    def anchor_per_query(self, subset: list[int], queries: list[int]) -> AnchorTensors:
        """Scores [Q, O] and per-query gradients [Q, O, k, W, d] of the option margins
        d[q, o] = score[q, o] - score[q, 0] (d[:, 0] = 0) w.r.t. the demo-slot embeddings.
        A per-query gradient through the prefix needs the prefix in every row: rows are unshared."""
        prompt = self.layout.prompt(subset, queries)
        prefix = torch.tensor(prompt.prefix, dtype=torch.long, device=self.device)
        n_opt = self.layout.n_options
        score_parts, grad_parts = [], []
        for _, batch, rows in self._batches(prompt):
            cont_ids, cont_mask = self._pad(rows.tokens)
            n_rows = cont_ids.shape[0]
            prefix_rows = self.embed(prefix)[None].expand(n_rows, -1, -1).detach().clone().requires_grad_(True)  # [B, P, d]
            with torch.enable_grad():
                inputs = torch.cat([prefix_rows, self.embed(cont_ids).detach()], dim=1)
                mask = torch.cat([torch.ones((n_rows, len(prefix)), dtype=cont_mask.dtype, device=self.device), cont_mask], dim=1)
                hidden = self.base(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
                scores = self._scores(hidden, rows, len(prefix), len(batch))
                margins = scores - scores[:, :1]  # [b, O]
                row_query = torch.tensor(rows.query, device=self.device)
                grads = prefix_rows.new_zeros((len(batch), n_opt) + prefix_rows.shape[1:])
                for o in range(1, n_opt):
                    (row_grad,) = torch.autograd.grad(margins[:, o].sum(), prefix_rows, retain_graph=o < n_opt - 1)
                    grads[:, o].index_add_(0, row_query, row_grad)
            self.counter.forward += n_rows
            self.counter.tokens_forward += int(mask.sum())
            self.counter.backward += n_rows * (n_opt - 1)
            self.counter.tokens_backward += int(mask.sum()) * (n_opt - 1)
            score_parts.append(scores.detach())
            grad_parts.append(_at_least_float32(self._slots(grads, prompt.spans)).cpu())
        n_queries = len(queries)
        return AnchorTensors(torch.cat(score_parts).cpu(), grad_margins=torch.cat(grad_parts),
                             reference=torch.zeros(n_queries, dtype=torch.long), row_of_query=torch.arange(n_queries),
                             row_count=torch.ones(n_queries, dtype=torch.float64))

    def anchor(self, mode: str, subset: list[int], queries: list[int]) -> AnchorTensors:
        """Anchor quantities in one of the ANCHOR_MODES: "label-groups", "per-query" or "mean-loss"."""
        self.counter.reserve(self.anchor_cost(mode, len(queries)))
        compute = {"label-groups": self.anchor_label_groups, "per-query": self.anchor_per_query,
                   "mean-loss": self.anchor_mean_loss}
        return compute[mode](subset, queries)

    # ---------- embeddings for retrieval ----------
    @property
    def n_layers(self) -> int:
        return len(self.base.layers)

    def embed_texts(self, tokenizer, texts: list[str], layer: int | None = None) -> torch.Tensor:
        """Mean-pooled hidden state [N, d] of each text (an empty text as one pad token): the last, after the final
        norm, or with ``layer`` the output of decoder layer ``layer`` (1-based, before the last; the model stops there:
        hidden_states[layer] of a full forward)."""
        token_lists = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return self.text_embeddings([ids or [self.pad_id] for ids in token_lists], layer)

    @torch.no_grad()
    def text_embeddings(self, token_lists: list[list[int]], layer: int | None = None) -> torch.Tensor:
        """Mean-pooled hidden state [N, d] of each token list (no prefix): the last, or after decoder layer
        ``layer`` (embed_texts). Batches take the lists in order of length, so a batch pads to about its own length
        (a row's embedding does not depend on its batch: right padding, masked), and the rows come back in the
        order given. A pass stopped early counts as its share of the layers (PassCounter.partial_forward)."""
        if layer is not None and not 1 <= layer < self.n_layers:  # the last: layer None, after the final norm
            raise ValueError(f"layer must be between 1 and {self.n_layers - 1}, not {layer}")
        share = layer_share(layer, self.n_layers)  # of a forward pass, per row
        self.counter.reserve(self.counter.partial_cost(len(token_lists) * share))
        by_length = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
        parts = []
        for start in range(0, len(by_length), self.batch_size):
            self.checkpoint()
            ids, mask = self._pad([token_lists[i] for i in by_length[start:start + self.batch_size]])
            hidden = self._hidden(ids, mask, layer)  # [B, L, d]
            self.counter.add_partial(ids.shape[0] * share)
            self.counter.tokens_forward += _ceil(int(mask.sum()) * share)
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
            parts.append(((hidden * weights).sum(1) / weights.sum(1)).float().cpu())  # [B, d]
        sorted_embeddings = torch.cat(parts)  # [N, d], rows in by_length's order
        embeddings = torch.empty_like(sorted_embeddings)
        embeddings[torch.tensor(by_length)] = sorted_embeddings
        return embeddings

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor, layer: int | None) -> torch.Tensor:
        """[B, L, d] the last hidden state (after the final norm), or the output of decoder layer ``layer``: a
        hook on that layer takes it and stops the forward there (only for this thread's call: the model may be
        shared)."""
        if layer is None:
            return self.base(input_ids=ids, attention_mask=mask).last_hidden_state
        caller = threading.get_ident()

        def stop(module, args, output):
            if threading.get_ident() == caller:
                raise _StoppedAt(output[0] if isinstance(output, tuple) else output)

        handle = self.base.layers[layer - 1].register_forward_hook(stop)
        try:
            self.base(input_ids=ids, attention_mask=mask)
        except _StoppedAt as stopped:
            return stopped.hidden
        finally:
            handle.remove()
        raise RuntimeError(f"decoder layer {layer} did not run")


class _StoppedAt(Exception):
    """Carries a decoder layer's output [B, L, d] out of the forward that it stops."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__("stopped after a decoder layer")
        self.hidden = hidden
