# Experiment: rank quality of first-order estimates for single swaps on IMDB (real model), several modes.
import json, os, sys, time, torch
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(__file__))
from iclsel.models.outcome import query_losses
from swap_setup import CACHE_PATH as cache_path, load_exact_cache, setup
ctx, runner, layout, anchor, swaps = setup()
cache = load_exact_cache()
def exact(sub):
    k = ",".join(map(str, sub))
    if k not in cache:
        s = ctx.exact(sub); cache[k] = float(query_losses(s, layout.gold).mean())
        json.dump(cache, open(cache_path, "w"))
    return cache[k]
rand = torch.randperm(len(swaps))[:8].tolist()
for mode in sys.argv[1:]:
    t=time.time(); est = ctx.anchor(anchor, mode); ta = time.time()-t
    r = est.estimate(swaps)
    top = torch.argsort(r.loss)[:4].tolist()
    idx = top + [i for i in rand if i not in top]
    el = [float(r.loss[i]) for i in idx]; xl = [exact(swaps[i].tolist()) for i in idx]
    print(mode, "anchor s", round(ta,1), "J0", round(est.loss,4), runner.counter.as_dict())
    for i,a,b in zip(idx, el, xl): print("  ", i, round(a,4), round(b,4), "top" if i in top else "")
    print(mode, "spearman", round(spearmanr(el, xl).statistic,3), "abs err", round(sum(abs(a-b) for a,b in zip(el,xl))/len(el),4),
          "zero", round(sum(abs(est.loss-b) for b in xl)/len(xl),4), "top4 exact mean", round(sum(xl[:4])/4,4), "random mean", round(sum(xl[4:])/len(xl[4:]),4), flush=True)
