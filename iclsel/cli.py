"""Command line: `iclsel select`, `iclsel serve`, `iclsel worker`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from iclsel.settings import get_settings


def _parse_params(pairs: list[str]) -> dict:
    """--param rounds=4 --param anchor_mode=per-query -> {"rounds": 4, "anchor_mode": "per-query"}."""
    params = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"iclsel: error: --param expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


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


def select_main(args: argparse.Namespace) -> int:
    from iclsel.models.data import InputError, read_inputs, read_jsonl
    from iclsel.models.engine import Engine, SelectionRequest
    from iclsel.models.loading import ModelNotFound, load_model

    settings = get_settings()
    progress = _Progress(not args.quiet)
    try:
        pool = read_jsonl(args.pool, "pool")
        queries = read_jsonl(args.queries, "queries")
        options = [o for o in args.options.split(",")] if args.options else None
        request = SelectionRequest(pool=pool, queries=queries, k=args.k, method=args.method, options=options,
                                   template=args.template, separator=args.separator.encode().decode("unicode_escape"),
                                   seed=args.seed, params=_parse_params(args.param),
                                   targets=read_inputs(args.targets, "targets") if args.targets else [])
        model = load_model(args.model or settings.model, device=args.device or settings.device,
                           dtype=args.dtype or settings.dtype, home=settings.home)
        result = Engine(model, batch_size=settings.batch_size).select(request, progress=progress)
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
    from iclsel.models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE, METHODS

    parser = argparse.ArgumentParser(prog="iclsel", description="Choose in-context demonstrations.")
    commands = parser.add_subparsers(dest="command", required=True)

    select = commands.add_parser("select", help="select k demonstrations for a query set; prints JSON")
    select.add_argument("--pool", required=True, help="JSONL of {id?, input, output}")
    select.add_argument("--queries", required=True, help="JSONL of {id?, input, output}")
    select.add_argument("--targets", help="JSONL of {input}: inputs you will prompt for; with --param retrieve=R "
                                          "each gets its own R nearest demos (result retrieved.targets)")
    select.add_argument("-k", type=int, default=4)
    select.add_argument("--method", default="gradient", choices=METHODS)
    select.add_argument("--options", help="comma-separated label verbalizers (default: the outputs seen)")
    select.add_argument("--template", default=DEFAULT_TEMPLATE)
    select.add_argument("--separator", default=DEFAULT_SEPARATOR.encode("unicode_escape").decode(),
                        help="between demos; backslash escapes allowed (default '\\n\\n')")
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="method parameter, e.g. rounds=4, candidates=4, subsets=64, anchor_mode=per-query")
    select.add_argument("--model", help="'default', a HF folder, a .gguf file or a hub id (env ICLSEL_MODEL)")
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
