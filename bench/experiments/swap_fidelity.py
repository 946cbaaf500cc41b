# Experiment: rank quality of first-order estimates for single swaps on IMDB (real model), several modes.
import json, os, random, sys, time, torch
from scipy.stats import spearmanr
from iclsel.models.loading import load_model
from iclsel.models.engine import Engine
from iclsel.models.data import read_jsonl
from iclsel.models.context import SelectionContext
from iclsel.models.cache import MemoryCache
from iclsel.models.selectors import _single_swaps
from iclsel.models.outcome import query_losses
torch.manual_seed(0)
ex = read_jsonl(os.path.join(os.path.dirname(__file__), "..", "data", "imdb.jsonl"), "d")
rng = random.Random(0); rng.shuffle(ex)
pos = [e for e in ex if e.output=="positive"]; neg=[e for e in ex if e.output=="negative"]
pool = pos[:50]+neg[:50]; rng.shuffle(pool)
queries = pos[50:66]+neg[50:66]
m = load_model("default"); e = Engine(m)
layout = e.layout(pool, queries, 4, None, "Review: {input}\nSentiment: {output}", "\n\n")
runner = e._runner(layout)
ctx = SelectionContext(runner, layout, pool, queries, 4, 0, {}, MemoryCache(), m.fingerprint, m.tokenizer, lambda *a: None)
anchor = ctx.balanced_subset()
cache_path = os.environ.get("ICLSEL_SWAP_CACHE", "/tmp/iclsel_swap_exact.json")
cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
def exact(sub):
    k = ",".join(map(str, sub))
    if k not in cache:
        s = ctx.exact(sub); cache[k] = float(query_losses(s, layout.gold).mean())
        json.dump(cache, open(cache_path, "w"))
    return cache[k]
swaps = _single_swaps(anchor, 100)
rand = torch.randperm(len(swaps))[:8].tolist()
for mode in sys.argv[1:]:
    t=time.time(); est = ctx.anchor(anchor, mode); ta = time.time()-t
    r = est.estimate(swaps)
    top = torch.argsort(r["loss"])[:4].tolist()
    idx = top + [i for i in rand if i not in top]
    el = [float(r["loss"][i]) for i in idx]; xl = [exact(swaps[i].tolist()) for i in idx]
    print(mode, "anchor s", round(ta,1), "J0", round(est.loss,4), runner.counter.as_dict())
    for i,a,b in zip(idx, el, xl): print("  ", i, round(a,4), round(b,4), "top" if i in top else "")
    print(mode, "spearman", round(spearmanr(el, xl).statistic,3), "abs err", round(sum(abs(a-b) for a,b in zip(el,xl))/len(el),4),
          "zero", round(sum(abs(est.loss-b) for b in xl)/len(xl),4), "top4 exact mean", round(sum(xl[:4])/4,4), "random mean", round(sum(xl[4:])/len(xl[4:]),4), flush=True)
