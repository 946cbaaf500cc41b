"""Should the check validate only the retrieval that led the gate?

    python -m bench.experiments.gate_led_check --seeds 10 11 12 13 14 15 16 17 18 19 20 21

Replays auto with its gate (sentence_gate.py at G = 0.375) where the gate lets the search through, with the check
"gate-led": of the two retrievals only the one the gate ranked first on the selection queries (topk-embed unless
topk-sentence answers at least the margin more, strategy.gate's rule) is checked, with its hybrid, beside the set;
the pick is auto's rule among those three (the best of set and the embedding candidates, a tie to the earlier; a
sentence-model candidate only by strategy.SENTENCE_MARGIN over it). Runs nothing: the records pooled_check.py reads
hold every figure. Prints the gate-led check against the gate as it ships, paired per test query, and the passes
the two fewer candidates save.
"""

from __future__ import annotations

import numpy as np

from iclsel.models.strategy import HYBRIDS, SENTENCE

from . import hybrid_candidate, pooled_check, sentence_gate
from .dev import dev_parser, parse_dev_args, replay_main


def led(gate_record: dict) -> str:
    """The retrieval the gate ranked first on the selection queries: topk-embed unless topk-sentence answers at
    least the margin more (sentence_gate.MARGIN, the engine's on 32 queries)."""
    answers = {name: int(np.sum(gate_record["correct"][name])) for name in sentence_gate.RETRIEVALS}
    return SENTENCE if answers[SENTENCE] - answers["topk-embed"] >= sentence_gate.MARGIN else "topk-embed"


def candidates(retrieval: str) -> tuple[str, ...]:
    """The set, the gate's retrieval and its hybrid."""
    return ("set", retrieval, *(name for name, by in HYBRIDS.items() if by == retrieval))


def pick(share: dict[str, float], among: tuple[str, ...]) -> str:
    """pooled_check.pick with only ``among`` checked."""
    return pooled_check.pick({name: (value if name in among else -np.inf) for name, value in share.items()})


def main(argv: list[str] | None = None) -> int:
    parser = dev_parser(__doc__.splitlines()[0], ["bbc", "sms", "imdb", "sdg"], list(range(10, 22)))
    args = parse_dev_args(parser, argv)
    return replay_main(args, sentence_gate.RESULTS, lambda args, journal: None, lambda records, journal:
                       pooled_check.print_table([r for r in records if r["dataset"] in args.datasets
                                                 and r["seed"] in args.seeds], journal, "gate-led check", rule))


def rule(gate_record: dict, answers) -> tuple[str, int]:
    """(the gate-led check's pick, the passes of the two candidates it does not run on the held-out demos)."""
    unchecked = 2 * hybrid_candidate.VALIDATION * gate_record["rows_per_query"]
    return pick(answers(pooled=False), candidates(led(gate_record))), unchecked


if __name__ == "__main__":
    raise SystemExit(main())
