"""Command line: `iclsel select`, `iclsel serve`, `iclsel worker`.

Importing this module and `iclsel --help` need only the client install (`pip install iclsel`); the
commands load the engine or the server (`pip install iclsel[server]`) when they run, and say so when
it is missing."""

from __future__ import annotations

import argparse
import json
import logging
import sys

# What `pip install iclsel[server]` adds (top-level import names): a command that needs one of them and
# does not find it asks for the extra instead of failing with a traceback.
SERVER_MODULES = frozenset({"torch", "transformers", "tokenizers", "accelerate", "gguf", "safetensors", "numpy",
                            "scipy", "rank_bm25", "sentence_transformers", "tqdm", "pydantic_settings", "fastapi",
                            "starlette", "uvicorn", "redis", "prometheus_client"})


def _parse_params(pairs: list[str]) -> dict:
    """--param rounds=4 --param anchor_mode=per-query -> {"rounds": 4, "anchor_mode": "per-query"}."""
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"iclsel: error: --param expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key] = _json_or_text(value)
    return params


def _json_or_text(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


class _Progress:
    """tqdm bars on stderr, one per phase."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = tqdm(total=total, desc=phase, file=sys.stderr, leave=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _parse_where(pairs: list[str]) -> dict:
    """--where KEY=VALUE[,VALUE...] -> {KEY: value} or {KEY: [values]}; values are JSON where they parse."""
    where: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"iclsel: error: --where expects KEY=VALUE, got {pair!r}")
        values = [_json_or_text(value) for value in text.split(",")]
        where[key] = values[0] if len(values) == 1 else values
    return where


def select_main(args: argparse.Namespace) -> int:
    from iclsel.models.data import InputError, read_inputs, read_jsonl
    from iclsel.models.engine import Engine, SelectionRequest
    from iclsel.models.loading import ModelNotFound, load_model
    from iclsel.settings import get_settings

    settings = get_settings()
    progress = _Progress(not args.quiet)
    try:
        pool = read_jsonl(args.pool, "pool")
        queries = read_jsonl(args.queries, "queries")
        options = [o for o in args.options.split(",")] if args.options else None
        request = SelectionRequest(pool=pool, queries=queries, k=args.k, method=args.method, options=options,
                                   option_score=args.option_score, template=args.template,
                                   separator=args.separator.encode().decode("unicode_escape"),
                                   seed=args.seed, params=_parse_params(args.param),
                                   targets=read_inputs(args.targets, "targets") if args.targets else [],
                                   max_prompt_tokens=args.max_prompt_tokens, min_per_label=args.min_per_label,
                                   exclude=args.exclude.split(",") if args.exclude else [],
                                   where=_parse_where(args.where), max_passes=args.max_passes)
        model = load_model(args.model or settings.model, device=args.device or settings.device,
                           dtype=args.dtype or settings.dtype, home=settings.home)
        engine = Engine(model, batch_size=settings.batch_size)
        if args.dry_run:
            progress.close()
            print(json.dumps(engine.plan(request).to_dict(), indent=2))
            return 0
        result = engine.select(request, progress=progress)
    except (InputError, ModelNotFound) as error:
        progress.close()
        print(f"iclsel: error: {error}", file=sys.stderr)
        return 2
    progress.close()
    if args.print_prompt:
        print(result["prompt"]["text"] + result["prompt"]["query_template"], file=sys.stderr)
    document = json.dumps(result, indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(document + "\n")
    print(document)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from iclsel.models.defaults import (DEFAULT_OPTION_SCORE, DEFAULT_SEPARATOR, DEFAULT_TEMPLATE, METHODS,
                                        OPTION_SCORES)

    parser = argparse.ArgumentParser(prog="iclsel", description="Choose in-context demonstrations.")
    commands = parser.add_subparsers(dest="command", required=True)

    select = commands.add_parser("select", help="select k demonstrations for a query set; prints JSON")
    select.add_argument("--pool", required=True, help="JSONL of {id?, input, output}")
    select.add_argument("--queries", required=True, help="JSONL of {id?, input, output}")
    select.add_argument("--targets", help="JSONL of {input}: inputs you will prompt for; with --param retrieve=R "
                                          "each gets its own R nearest demos (result retrieved.targets)")
    select.add_argument("-k", type=int, default=4, help="demonstrations to select (default 4)")
    select.add_argument("--method", default="gradient", choices=METHODS,
                        help="gradient (the default) returns the best of a searched set, per-query retrieval "
                             "and hybrids (--param strategy=...); README's reference describes the others")
    select.add_argument("--options", help="comma-separated label verbalizers (default: the outputs seen)")
    select.add_argument("--option-score", choices=OPTION_SCORES, default=DEFAULT_OPTION_SCORE,
                        help="an option of several tokens scores the sum or the mean of its tokens' log-probabilities")
    select.add_argument("--template", default=DEFAULT_TEMPLATE,
                        help="each demo rendered with {input} and {output}; a query, the template up to {output} "
                             "(default %(default)r)")
    select.add_argument("--separator", default=DEFAULT_SEPARATOR.encode("unicode_escape").decode(),
                        help="between demos; backslash escapes allowed (default '\\n\\n')")
    select.add_argument("--seed", type=int, default=0, help="the search's random draws (default 0)")
    select.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. rounds=4, candidates=4, subsets=64, anchor_mode=per-query")
    select.add_argument("--max-prompt-tokens", type=int, help="the returned prompt before the query fits in this")
    select.add_argument("--min-per-label", type=int, default=0, help="each label at least this often in the set")
    select.add_argument("--exclude", help="comma-separated pool ids never chosen")
    select.add_argument("--where", action="append", default=[], metavar="KEY=VALUE[,VALUE...]",
                        help="only demos whose metadata KEY is one of the VALUEs (JSON where they parse) are candidates")
    select.add_argument("--max-passes", type=int, help="forward-equivalents the whole job may spend")
    select.add_argument("--dry-run", action="store_true",
                        help="print what the selection would cost (passes, seconds on this machine) instead of running it")
    select.add_argument("--model", help="'default' (SmolLM2-135M-Instruct), 'gemma3-270m', a HF folder, a .gguf file or a "
                        "hub id (env ICLSEL_MODEL)")
    select.add_argument("--device", help="auto, cpu, cuda (env ICLSEL_DEVICE)")
    select.add_argument("--dtype", help="float32, bfloat16, float16 (env ICLSEL_DTYPE)")
    select.add_argument("--output", "-o", help="also write the JSON here")
    select.add_argument("--print-prompt", action="store_true", help="print the prompt the selection implies to stderr")
    select.add_argument("--quiet", "-q", action="store_true", help="no progress bars")

    commands.add_parser("serve", help="run the HTTP API (see `iclsel serve --help`)", add_help=False)
    commands.add_parser("worker", help="run a job worker (see `iclsel worker --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(argv)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        command = argv[0] if argv and argv[0] in ("serve", "worker") else "select"
        print(f"iclsel: error: `iclsel {command}` needs the engine and the server, which this install lacks "
              f"({error.name} is missing): pip install 'iclsel[server]'", file=sys.stderr)
        return 2


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "serve":
        from iclsel.app.server import serve_main
        return serve_main(argv[1:]) or 0
    if argv and argv[0] == "worker":
        from iclsel.workers.main import worker_main
        return worker_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return select_main(args)


if __name__ == "__main__":
    sys.exit(main())
