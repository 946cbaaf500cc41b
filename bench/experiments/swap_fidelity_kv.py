# Experiment: first-order estimates in the slot's key/value space (demo KV computed in the anchor's context).
import os, sys, time, torch
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(__file__))
from transformers import DynamicCache
from iclsel.models.inference import build_rows
from iclsel.models.outcome import query_losses
from swap_setup import load_exact_cache, setup
ctx, runner, layout, anchor, swaps = setup()
cache = load_exact_cache()
t0 = time.time()
# 1) anchor: prefix KV and per-(label, option) gradients w.r.t. the prefix KV
prefix = layout.prefix_ids(anchor)
with torch.no_grad():
    out = runner.base(input_ids=prefix[None], use_cache=True)
kv = [t for l in out.cache.layers for t in (l.keys, l.values)]
leaves = [t.detach().requires_grad_(True) for t in kv]
pairs = list(zip(leaves[0::2], leaves[1::2]))
gold = layout.gold; O = 2; P = len(prefix)
grads = {}
scores0 = torch.zeros(32, O)
for label in range(O):
    members = [q for q in range(32) if int(gold[q]) == label]
    for st in range(0, len(members), 8):
        b = members[st:st+8]; rows = build_rows(layout, b)
        sc = runner._scores(runner._continue(pairs, P, rows), rows, 0, len(b))
        scores0[b] = sc.detach()
        for o in range(O):
            if o == label: continue
            g = torch.autograd.grad((sc[:, o] - sc[:, label]).sum(), leaves)
            acc = grads.setdefault((label, o), [torch.zeros_like(t) for t in leaves])
            for a_, g_ in zip(acc, g): a_ += g_
print("anchor grads", time.time()-t0, flush=True)
# 2) every candidate demo's KV at every slot, in the anchor's context; contributions
W = layout.slot_width; start0 = layout.slot_start(); n = 100; k = 4
contrib = torch.zeros(O, O, k, n)
t1 = time.time()
with torch.no_grad():
    for s in range(k):
        start = start0 + s * W
        ctx_kv = [(a[:, :, :start], b_[:, :, :start]) for a, b_ in zip(kv[0::2], kv[1::2])]
        for b0 in range(0, n, 25):
            ids = layout.demo_ids[b0:b0+25]; B = ids.shape[0]
            cache_b = DynamicCache(ddp_cache_data=[(a.expand(B,-1,-1,-1), b_.expand(B,-1,-1,-1)) for a, b_ in ctx_kv]) if start > 0 else None
            o2 = runner.base(input_ids=ids, cache=cache_b, use_cache=True, position_ids=(start + torch.arange(W))[None].expand(B, -1))
            new = [t[:, :, start:start+W] for l in o2.cache.layers for t in (l.keys, l.values)]
            for (label, o), acc in grads.items():
                contrib[label, o, s, b0:b0+B] = sum((g_[:, :, start:start+W] * t).sum((1, 2, 3)) for g_, t in zip(acc, new))
print("demo KV + contributions", time.time()-t1, flush=True)
counts = torch.bincount(gold, minlength=O).double()
margins0 = scores0 - scores0.gather(1, gold[:, None])
def est_loss(sub):
    d = torch.zeros(O, O)
    for s in range(k):
        d += contrib[:, :, s, sub[s]] - contrib[:, :, s, anchor[s]]
    m_ = margins0 + (d / counts[:, None].float())[gold]
    return float(query_losses(m_, gold).mean())
J0 = float(query_losses(scores0, gold).mean())
idxs = [int(i) for i in range(len(swaps)) if ",".join(map(str, swaps[i].tolist())) in cache]
el = [est_loss(swaps[i].tolist()) for i in idxs]; xl = [cache[",".join(map(str, swaps[i].tolist()))] for i in idxs]
for i, a, b in zip(idxs, el, xl): print("  ", i, round(a, 4), round(b, 4))
print("J0", J0, "n", len(idxs), "spearman", spearmanr(el, xl).statistic, "abs err", sum(abs(a-b) for a,b in zip(el,xl))/len(el), "zero", sum(abs(J0-b) for b in xl)/len(xl))
allest = torch.tensor([est_loss(swaps[i].tolist()) for i in range(len(swaps))])
top = torch.argsort(allest)[:6].tolist()
print("top by KV estimate", [(i, round(float(allest[i]),4), cache.get(",".join(map(str, swaps[i].tolist())))) for i in top])
