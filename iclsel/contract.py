"""The one typed contract of a selection: what is asked (SelectionRequest, each method's Params) and what comes
back (SelectionResult, or SelectionPlan for a dry run).

Every layer uses these models: the HTTP API validates a body straight into SelectionRequest (and its OpenAPI
schema is generated from them), the job spec is ``request.spec()`` (a model_dump), the worker reads it back with
``SelectionRequest.from_spec``, the engine runs it, and the CLI and the Python client build it. A method's
``params`` stay the JSON object the caller sent (echoed in the result, part of the job id); the engine parses
them into the method's Params model (``PARAMS[method].parse``), which holds each parameter's type, default and
check once. Kept free of torch: the client and the API process import it without the ML core.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Callable, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, WithJsonSchema,
                      field_validator, model_serializer, model_validator)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

DEFAULT_TEMPLATE = "Input: {input}\nLabel: {output}"
DEFAULT_SEPARATOR = "\n\n"
# how an option of several tokens is scored (models/inference.py): "sum" of its tokens' log-probabilities (the
# option's log-probability) or their "mean" (length-normalised); options of one token score the same either way
OPTION_SCORES = ("sum", "mean")
DEFAULT_OPTION_SCORE = "sum"
ANCHOR_MODES = ("label-groups", "per-query", "mean-loss")  # anchor.ANCHOR_MODES
OBJECTIVES = ("loss", "errors")  # outcome.OBJECTIVES
EVALUATORS = ("subsample", "exact", "first-order")  # what decides the gradient search's moves
# the prompts a gradient request can return (models/strategy.py): "set" = the searched demos (with params.retrieve,
# followed by each query's neighbours); "topk-embed" / "topk-sentence" / "bm25" = each query's k nearest pool demos
# (by the model's own hidden states, by the sentence-embedding model, by words); "auto" = the one that does best
# on pool demos held out from the search
STRATEGIES = ("auto", "set", "topk-embed", "topk-sentence", "bm25")
# the hybrids auto can check, each with the retrieval of its per-query demos: the searched set's first k - k//2
# demos, then each query's k//2 nearest by the model's embedding ("hybrid") or by the sentence model
HYBRIDS = {"hybrid": "topk-embed", "hybrid-sentence": "topk-sentence"}
# the prompts auto can check (params.compare) and those it checks by default, in order (a tie goes to the earlier;
# the sentence model's candidates must win by a margin, models/strategy.py). Each candidate more is one more chance
# for a lucky check: on the dev seeds BM25 never beat topk-embed on a dataset's mean; topk-sentence, held to its
# margin, gained 21 points on sdg and 5 on BBC and changed nothing on sms on dev seeds that did not shape the margin
# (bench/experiments/README.md: BM25 among the candidates; a sentence-embedding model for retrieval; a hybrid whose
# neighbours come from the sentence model).
COMPARABLE = ("set", "topk-embed", "hybrid", "topk-sentence", "hybrid-sentence", "bm25")
DEFAULT_COMPARE = ("set", "topk-embed", "hybrid", "topk-sentence", "hybrid-sentence")
RETRIEVALS = ("topk-embed", "bm25", "topk-sentence")  # the per-query retrievals (models/strategy.py PER_QUERY)
# the retrievals whose neighbours come in vote order (majority_last below): adopted for the sentence
# model's on dev seeds, not for topk-embed's, whose gain did not clear its interval (bench/experiments/README.md:
# neighbours in vote order)
DEFAULT_VOTE_ORDER = ("topk-sentence",)
PROPOSALS = ("per-slot", "global")  # which estimated swaps the exact evaluator runs
# params.budget of the subsample search, when not given: 16 exact runs on every selection query (16 rows per
# query, times the rows a query takes: one per option when an option has several tokens), a quarter of what
# `exact` spends with its default 64 subsets.
DEFAULT_BUDGET_RUNS = 16
# auto's gate before the search (models/strategy.py gate): the share of the queries by which per-query retrieval must
# beat the search's start, and the fewest queries it decides on; 0.375 is above every IMDB dev seed's lead (0.31 at
# most, where the searched set then won) and took the search out of 5 of 12 BBC, 9 of 12 sms and 6 of 6 sdg dev seeds
# at no loss (bench/experiments/README.md: a gate before the search with the sentence model's retrieval)
DEFAULT_GATE = 0.375
MIN_GATE_QUERIES = 16


def majority_last(nearest: list[int], labels: list[str]) -> list[int]:
    """``nearest`` (demo indices, nearest last) reordered so that the label most of them carry comes last, where a
    small model's answer follows it: label groups by count, then by the rank of their nearest member, ascending;
    within a group the nearest last. The same demos (bench/experiments/README.md: neighbours in vote order)."""
    rank = {demo: position for position, demo in enumerate(nearest)}  # higher: nearer
    count = Counter(labels[demo] for demo in nearest)
    nearest_of = {label: max(rank[demo] for demo in nearest if labels[demo] == label) for label in count}
    return sorted(nearest, key=lambda demo: (count[labels[demo]], nearest_of[labels[demo]], rank[demo]))


class InputError(ValueError):
    """Bad user input. ``field`` names what is wrong (``pool``, ``queries[3].output``, ``k`` ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def field_path(loc) -> str:
    """("body", "queries", 0, "input") -> "queries[0].input"."""
    path = ""
    for part in loc:
        if part in ("body", "query", "path") and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def input_error(error: ValidationError, prefix: str = "") -> InputError:
    """The first of pydantic's errors as an InputError naming the field (a param's own message kept)."""
    first = error.errors()[0]
    message = (first.get("ctx") or {}).get("message", first["msg"])
    return InputError(prefix + field_path(first["loc"]), message)


# ---------- examples ----------

class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)
    id: str | int | None = Field(None, description="defaults to the position in the list")
    input: str
    output: str
    metadata: dict[str, Any] | None = Field(None, description="free-form; a selection's `where` filters on it")

    def to_dict(self) -> dict:
        """The record, as models.data.Example.to_dict gives it: id and metadata only where given."""
        return _record(self.model_dump())


class ExampleOut(BaseModel):
    id: str
    input: str
    output: str
    metadata: dict[str, Any] | None = Field(None, description="as given; absent when the example had none")

    @model_serializer(mode="wrap")
    def _without_absent_metadata(self, handler):
        data = handler(self)
        if data.get("metadata") is None:
            data.pop("metadata", None)
        return data


Scalar = str | int | float | bool


# ---------- method parameters ----------

def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("param", "{message}", {"message": message})


def _converted(convert: Callable, low: int | None = None, allowed: tuple | None = None):
    """A param as the methods always read it: ``convert(value)`` (so "4" and 4.0 are 4), at least ``low``, one of
    ``allowed``; the error messages are the methods' own."""
    def check(value):
        try:
            value = convert(value)
        except (TypeError, ValueError):
            raise _fail(f"must be {convert.__name__}, got {value!r}") from None
        if low is not None and value < low:
            raise _fail(f"must be at least {low}, got {value}")
        if allowed is not None and value not in allowed:
            raise _fail(f"must be one of {list(allowed)}, not {value!r}")
        return value
    return check


def Int(default: int | None, low: int | None = None, description: str = ""):  # noqa: N802 (a field factory)
    return Field(default, description=description, json_schema_extra={"minimum": low} if low is not None else None)


class Params(BaseModel):
    """Parameters every method takes; a method's own Params add theirs. Unknown keys are ignored."""
    model_config = ConfigDict(extra="ignore", frozen=True)

    pool_queries: bool = Field(False, description="the pool's demos are selection queries too, each scored only for "
                                                   "prompts it is not in (gradient, gradre, exact)")
    prompt_width: SkipJsonSchema[Any] = None  # retired: refused (every prompt is the natural one)
    filler: SkipJsonSchema[Any] = None  # retired, likewise
    retrieve: int = Field(0, description="with r from 1 to k-1: only k - r demos are chosen for the whole query "
                                         "set; every prompt continues with its query's r nearest pool demos")
    retrieve_by: str = Field("topk-embed", description="with retrieve: how the neighbours are found, topk-embed "
                                                      "(the model's mean-pooled last hidden state), topk-sentence "
                                                      "(the sentence-embedding model) or bm25 (words)")
    evaluate_selected: bool = Field(True, description="run the chosen set exactly on the queries (`exact`)")
    max_slot_tokens: Any = Field(None, description="refuse pool demos longer than this many tokens, separator "
                                                   "included")

    @field_validator("pool_queries", mode="before")
    @classmethod
    def _strict_bool(cls, value):
        if not isinstance(value, bool):
            raise _fail(f"must be true or false, got {value!r}")
        return value

    @field_validator("prompt_width", "filler", mode="before")
    @classmethod
    def _retired(cls, value):
        raise _fail("is not a parameter: every prompt is the natural one (demos joined by the separator, no filler)")

    @field_validator("retrieve", mode="before")
    @classmethod
    def _slots(cls, value, info: ValidationInfo):
        k = (info.context or {}).get("k")
        if isinstance(value, bool) or not isinstance(value, int) or (k is not None and not 0 <= value < k):
            raise _fail(f"must be an integer from 0 to k-1 = {'k' if k is None else k - 1}, got {value!r}")
        return value

    @field_validator("retrieve_by", mode="before")
    @classmethod
    def _retrieval(cls, value):
        return _converted(str, allowed=RETRIEVALS)(value)

    @field_validator("evaluate_selected", mode="before")
    @classmethod
    def _truthy(cls, value):
        return bool(value)

    @staticmethod
    def subset_counts(params: dict) -> dict[str, int]:
        """The subset-count params given as integers (the server caps them before it queues a job)."""
        return {name: params[name] for name in SUBSET_PARAMS if isinstance(params.get(name), int)}

    @classmethod
    def parse(cls, params: dict, k: int | None = None) -> "Params":
        """The request's params object, parsed; an InputError naming params.<name> for the first bad one."""
        if not isinstance(params, dict):
            raise InputError("params", "must be an object")
        try:
            return cls.model_validate(params, context={"k": k})
        except ValidationError as error:
            raise input_error(error, "params.") from None


_CHOICES = {"evaluator": EVALUATORS, "init": ("balanced", "random"), "moves": ("any", "same-label"),
            "objective": OBJECTIVES, "propose": PROPOSALS, "strategy": STRATEGIES, "order": ("gradient", "random")}
_LOWS = {"patience": 0, "starts": 1, "rounds": None, "swaps": None, "candidates": None, "screen": 1, "sample": 1,
         "finalists": 1, "per_slot": 1, "checks": 0, "budget": 0, "validation": 1}


def _distinct(value, allowed: tuple[str, ...], noun: str, non_empty: bool = False) -> tuple[str, ...]:
    """A list of names, each among ``allowed`` and none twice (``noun``: what the error calls one) -> a tuple."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or (non_empty and not value):
        raise _fail(f"must be a {'non-empty ' if non_empty else ''}list of {list(allowed)}, got {value!r}")
    names = tuple(_converted(str, allowed=allowed)(name) for name in value)
    if len(set(names)) < len(names):
        raise _fail(f"names a {noun} twice: {list(names)}")
    return names


class GradientParams(Params):
    """The gradient search (models/selectors.py), in the order the search has always checked them."""
    strategy: str = Field("auto", description=(
        "the prompt returned: auto (whichever prompt of params.compare does best on pool demos the search never "
        "scored), set (the searched demos), topk-embed, topk-sentence or bm25 (each query's k nearest pool demos by "
        "the model's mean-pooled hidden states, by the sentence-embedding model, by words)"))
    compare: tuple[str, ...] = Field(DEFAULT_COMPARE, description=(
        "auto: the prompts it checks, in order (an accuracy tie goes to the earlier; topk-sentence and "
        "hybrid-sentence only by a margin), 'set' among them: set, topk-embed, hybrid (the set's first k - k//2 "
        "demos, then each query's k//2 nearest by the model's embedding), topk-sentence, hybrid-sentence (the "
        "hybrid with the neighbours by the sentence model), bm25"))
    validation: int = Int(32, 1, "auto: pool demos outside the searched set that every strategy runs on")
    gate: float | None = Field(DEFAULT_GATE, description=(
        f"auto, with at least {MIN_GATE_QUERIES} queries: before the search, run its start and per-query retrieval "
        "on the queries; when the better retrieval (topk-embed, or topk-sentence by a clear win) answers this share "
        "of them more than the start, return it with no search and no held-out check (null: always search)"))
    gate_queries: int | None = Int(None, MIN_GATE_QUERIES, (
        "auto: the most queries the gate runs on (a random draw of them where there are more; null: every query). "
        "Fewer runs, a noisier gate: deciding on 16 of 32 queries cost BBC 1.3 points on the dev seeds"))
    evaluator: str = Field("subsample", description="what decides a move: subsample, exact or first-order")
    anchor_mode: str | None = Field(None, validate_default=True, description=(
        "label-groups, mean-loss or per-query; default mean-loss with subsample, else label-groups"))
    init: str = Field("balanced", description="the start: balanced (cycling over the labels) or random")
    order: str = Field("gradient", description=(
        "subsample: the order each slot's candidates are tried in: gradient (best first-order estimate first) or "
        "random (the gradient still runs, for the influence scores: the same passes)"))
    vote_order: tuple[str, ...] = Field(DEFAULT_VOTE_ORDER, description=(
        "the retrievals whose k demos per query come in vote order in the prompts auto checks and returns (the "
        "label most of them carry last, the nearest last within each label; the others: the nearest last): any of "
        "topk-embed, topk-sentence, bm25; [] for similarity order everywhere"))
    moves: str = Field("any", description="same-label: a demo is only replaced by one with the same label")
    objective: str = Field("loss", description="loss, or errors (the error count first, ties by the loss)")
    propose: str = Field("per-slot", description="exact evaluator: per-slot or global proposals")
    patience: int = Int(1, 0, "further batches of proposals in a round when one finds no improvement")
    starts: int = Int(1, 1, "run that many starts exactly and search from the best")
    rounds: int = Int(4, None, "search rounds")
    swaps: int = Int(0, None, "single swaps estimated per round (0 = all k(n-k))")
    candidates: int = Int(4, None, "exact evaluator: swaps per batch with propose global")
    screen: int = Int(8, 1, "subsample: queries every proposal runs on")
    sample: int = Int(8, 1, "subsample: the finalists' further queries")
    finalists: int = Int(2, 1, "subsample: screened proposals that also run on sample more queries")
    per_slot: int = Int(2, 1, "subsample: candidates per slot in each batch")
    checks: int = Int(4, 0, "evaluated sets also run on every query, for diagnostics")
    budget: int | None = Int(None, 0, f"subsample: forward-equivalents the search may spend (0 = no limit); "
                                      f"default {DEFAULT_BUDGET_RUNS} exact runs on every query")

    @field_validator("evaluator", "init", "moves", "objective", "propose", "strategy", "order", mode="before")
    @classmethod
    def _choice(cls, value, info: ValidationInfo):
        return _converted(str, allowed=_CHOICES[info.field_name])(value)

    @field_validator("patience", "starts", "rounds", "swaps", "candidates", "screen", "sample", "finalists",
                     "per_slot", "checks", "budget", "validation", mode="before")
    @classmethod
    def _count(cls, value, info: ValidationInfo):
        return _converted(int, low=_LOWS[info.field_name])(value)

    @field_validator("gate", mode="before")
    @classmethod
    def _share(cls, value):
        if value is None:
            return None
        share = _converted(float)(value)
        if isinstance(value, bool) or not 0 <= share <= 1:
            raise _fail(f"must be a share from 0 to 1, or null, got {value!r}")
        return share

    @field_validator("gate_queries", mode="before")
    @classmethod
    def _gate_queries(cls, value):
        return None if value is None else _converted(int, low=MIN_GATE_QUERIES)(value)

    @field_validator("vote_order", mode="before")
    @classmethod
    def _vote_order(cls, value):
        return _distinct(value, RETRIEVALS, "retrieval")

    @field_validator("compare", mode="before")
    @classmethod
    def _compare(cls, value):
        names = _distinct(value, COMPARABLE, "prompt", non_empty=True)
        if "set" not in names:
            raise _fail("must include 'set' (auto searches a set; to retrieve without a search, name a per-query "
                        "strategy in params.strategy)")
        return names

    @field_validator("anchor_mode", mode="before")
    @classmethod
    def _anchor_mode(cls, value, info: ValidationInfo):
        """By default the cheapest anchor that ranks proposals within a slot (mean-loss) for the subsample
        evaluator, label-groups for the others."""
        if value is None:
            value = "mean-loss" if info.data.get("evaluator") == "subsample" else "label-groups"
        return _converted(str, allowed=ANCHOR_MODES)(value)

    @field_validator("objective")
    @classmethod
    def _needs_margins(cls, value, info: ValidationInfo):
        if value != "loss" and info.data.get("anchor_mode") == "mean-loss" and info.data.get("evaluator") != "subsample":
            raise _fail(f"{value!r} needs per-query margins: anchor_mode 'label-groups' or 'per-query'")
        return value


class SamplingParams(Params):
    """What gradre and exact share: the random k-subsets they score."""
    subsets: int = Int(64, 1, "random k-subsets scored")

    @field_validator("subsets", mode="before")
    @classmethod
    def _count(cls, value, info: ValidationInfo):
        return _converted(int, low=1)(value)


class ExactParams(SamplingParams):
    """exact: random k-subsets, each run exactly."""


class GradreParams(SamplingParams):
    """gradre: the paper's random ensemble, estimated from a few random anchors."""
    anchors: int = Int(2, 1, "random anchors the subsets are estimated from")
    checks: int = Int(8, 0, "scored subsets also run exactly, for diagnostics")
    anchor_mode: str = Field("per-query", description="label-groups, mean-loss or per-query")

    @field_validator("anchors", "checks", mode="before")
    @classmethod
    def _at_least(cls, value, info: ValidationInfo):
        return _converted(int, low={"anchors": 1, "checks": 0}[info.field_name])(value)

    @field_validator("anchor_mode", mode="before")
    @classmethod
    def _mode(cls, value):
        return _converted(str, allowed=ANCHOR_MODES)(value)


# the methods and their Params: models/methods.py registers one method object for each name
PARAMS: dict[str, type[Params]] = {"gradient": GradientParams, "gradre": GradreParams, "exact": ExactParams,
                                   "random": Params, "bm25": Params, "topk-embed": Params}
METHODS = tuple(PARAMS)
SUBSET_PARAMS = ("subsets",)  # params counting sampled subsets (capped by the server's max_subsets)


# ---------- the request ----------

EXAMPLE_BODY = {
    "pool": [{"input": "a wonderful film", "output": "positive"}, {"input": "dull and long", "output": "negative"},
             {"input": "I loved it", "output": "positive"}, {"input": "a waste of time", "output": "negative"}],
    "queries": [{"input": "great acting", "output": "positive"}, {"input": "boring plot", "output": "negative"}],
    "k": 2, "method": "gradient"}
# in a job spec only when they differ from their default, so that a request without them keeps its job id
SPEC_WHEN_GIVEN = ("option_score", "targets", "max_prompt_tokens", "min_per_label", "exclude", "where", "max_passes",
                   "dry_run", "warm_start")


class SelectionRequest(BaseModel):
    """Choose k demonstrations from a pool for a set of labelled queries."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_BODY]})

    pool: list[ExampleIn] | None = Field(None, min_length=1, description="the pool inline (or pool_id)")
    pool_id: str | None = Field(None, description="a pool stored with POST /v1/pools (or pool)")
    queries: list[ExampleIn] = Field(min_length=1)
    k: int = Field(4, ge=1)
    method: Literal[METHODS] = "gradient"  # type: ignore[valid-type]
    options: list[str] | None = Field(None, min_length=1, description="label verbalizers; default: outputs seen")
    option_score: Literal[OPTION_SCORES] = Field(DEFAULT_OPTION_SCORE, description=(  # type: ignore[valid-type]
        "an option of several tokens scores the sum of its tokens' log-probabilities, or their mean"))
    template: str = DEFAULT_TEMPLATE
    separator: str = DEFAULT_SEPARATOR
    seed: int = Field(0, ge=0, le=2**63 - 1)
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters")
    targets: list[str] = Field(default_factory=list, description=(
        "inputs (no labels) you will prompt for: with params.retrieve, each gets its own nearest demos "
        "(result.retrieved.targets)"))
    max_prompt_tokens: int | None = Field(None, ge=1, description=(
        "the returned prompt before the query (specials and k demo slots) fits in this many tokens"))
    min_per_label: int = Field(0, ge=0, description="each label appears at least this often in the set")
    exclude: list[str | int] = Field(default_factory=list, description="pool ids never chosen")
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict, description=(
        "only demos whose metadata matches are candidates: {key: value} or {key: [values]}, all keys"))
    max_passes: int | None = Field(None, ge=1, description=(
        "forward-equivalents the whole job may spend; the selection stops within it (result.budget)"))
    dry_run: bool = Field(False, description="return what the selection would cost (result.estimated_passes, "
                                             "estimated_seconds) instead of running it")
    wait_s: float | None = Field(None, ge=0, allow_inf_nan=False,
                                 description="wait this long for the result (default: server setting)")
    # set by the service only, on a grown pool (app/growth.py, models/warm.py): {job, parent_size, selected, anchor}
    warm_start: SkipJsonSchema[dict[str, Any] | None] = None

    @model_validator(mode="after")
    def one_pool(self, info: ValidationInfo) -> "SelectionRequest":
        spec = bool((info.context or {}).get("spec"))  # a job spec holds both: the id and the records
        if (self.pool is None and self.pool_id is None) or (not spec and self.pool is not None and
                                                            self.pool_id is not None):
            raise ValueError("give exactly one of pool and pool_id")
        return self

    def spec(self) -> dict:
        """The job spec: the normalised request (pool records, pool id, exclude as ids), without wait_s."""
        data = self.model_dump(exclude={"wait_s", *SPEC_WHEN_GIVEN})
        data.update(self.model_dump(include=set(SPEC_WHEN_GIVEN), exclude_defaults=True))
        data["pool"] = [_record(example) for example in data["pool"]]
        data["queries"] = [_record(example) for example in data["queries"]]  # as ExampleIn.to_dict
        return data

    @classmethod
    def from_spec(cls, spec: dict) -> "SelectionRequest":
        return cls.model_validate(spec, context={"spec": True})


class PythonRequest(SelectionRequest):
    """A SelectionRequest built in Python (models.engine.SelectionRequest, the CLI): pool and queries may come
    positionally, SelectionRequest(pool, queries, k=4, ...), and a request that breaks the contract is refused
    where it is run (Engine.select raises ``request.invalid``, an InputError naming the field), as one read from
    JSON is refused where it is read. (A separate class: pydantic validates through an overridden __init__.)"""

    _invalid: InputError | None = PrivateAttr(None)

    def __init__(self, pool=None, queries=None, /, **fields):
        fields.update({name: value for name, value in (("pool", pool), ("queries", queries)) if value is not None})
        try:
            super().__init__(**fields)
        except ValidationError as error:
            built = type(self).model_construct(**fields)
            for name in ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"):
                object.__setattr__(self, name, getattr(built, name))
            self._invalid = input_error(error)

    @property
    def invalid(self) -> InputError | None:
        """Why a request built in Python breaks the contract (None when it keeps it)."""
        return self._invalid


def _record(example: dict) -> dict:
    return {key: value for key, value in example.items() if value is not None or key not in ("metadata", "id")}


# ---------- the result ----------

# A number from the engine, passed through as it is (an int stays an int; NaN and infinities become
# null, as for any JSON value): a `float` field would turn 3 into 3.0 and keep NaN.
Number = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]})]


class ResultPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # keys the engine adds pass through


class Prompt(ResultPart):
    text: str = Field(description="the demos, each rendered with the template and followed by the separator: "
                                  "append a query rendered with query_template to get the prompt that was scored")
    token_ids: list[int] = Field(description="text tokenised with the model's tokenizer and its default special "
                                             "tokens")
    query_template: str = Field(description="what follows the demos, up to the label")


class Retrieved(ResultPart):
    slots: int = Field(description="demos per prompt chosen per query (params.retrieve, a hybrid's k//2, or k)")
    by: str = Field(description="topk-embed, topk-sentence or bm25")
    layer: int | None = Field(None, description=(
        "by topk-embed: the decoder layer whose mean-pooled output embedded the texts (auto's candidates on a model "
        "with an auto layer: SmolLM2-135M's 8 of 30); null: the last hidden state"))
    queries: list[list[str]] = Field(description="each query's own demo ids, after the selected ones")
    targets: list[list[str]] = Field(description="each target's own demo ids")


class StrategyCheck(ResultPart):
    strategy: str
    accuracy: Number = Field(description="share of the held-out demos answered right")
    accuracy_ci95: list[Number] = Field(description="95% bootstrap interval of accuracy (held-out demos resampled)")
    loss: Number = Field(description="mean -log p(gold option) on the held-out demos")


class StrategyReport(ResultPart):
    chosen: str = Field(description="the prompt returned: set, topk-embed, topk-sentence, bm25, hybrid or "
                                    "hybrid-sentence")
    by: str = Field(description="validation (params.strategy auto), gate (auto returned per-query retrieval "
                                "without a search: params.gate), request (named in params.strategy) or why auto "
                                "could not validate")
    search_queries: int = Field(description="queries the set was searched on")
    searched: list[str] = Field(default_factory=list, description=(
        "ids of the searched set, in prompt order (what `selected` holds when the set is chosen; empty when no "
        "search ran)"))
    validation_queries: int = Field(description="held-out pool demos (outside the set) every strategy ran on; by "
                                                "gate, the queries")
    checks: list[StrategyCheck] = Field(description=(
        "each strategy on the held-out queries, the chosen first (by gate: the retrievals and the search's start, "
        "named start, on the queries)"))
    margin_ci95: list[Number] | None = Field(description=(
        "chosen minus the next check's accuracy on the held-out demos (the runner-up, or topk-sentence where it led "
        "without a clear win): 95% paired bootstrap interval"))
    gate: list[StrategyCheck] | None = Field(None, description=(
        "the gate's prompts on the queries (the search's start, named start, and each retrieval; the returned one "
        "first where it returned one), also where it let the search through; null where no gate ran"))


class Outcome(ResultPart):
    loss: Number = Field(description="mean -log p(gold option) over the queries")
    accuracy: Number = Field(description="share of queries answered right (null where not estimated)")


class ModelInfo(ResultPart):
    name: str
    fingerprint: str
    device: str
    dtype: str


class ConstraintsReport(ResultPart):
    candidates: int = Field(description="pool demos left after exclude, where and max_prompt_tokens")
    pool: int = Field(description="pool demos in the request")
    prompt_tokens: int = Field(description="tokens of the returned prompt before the query")
    max_prompt_tokens: int | None
    min_per_label: int


class BudgetReport(ResultPart):
    max_passes: int
    spent: int = Field(description="forward-equivalents the job spent (never above max_passes)")
    budget_exhausted: bool = Field(description="the method stopped short of what it would have done")


class SelectionResult(ResultPart):
    """Engine.select's result (models/engine.py), in the engine's key order."""

    method: str
    k: int
    seed: int
    options: list[str]
    params: dict[str, Any]
    selected: list[ExampleOut] = Field(description="the chosen demos in prompt order")
    prompt: Prompt
    retrieved: Retrieved | None = Field(description="with params.retrieve or a per-query strategy, the per-query "
                                                    "demos")
    strategy: StrategyReport | None = Field(None, description="gradient: which prompt was returned, and why")
    scores: dict[str, Number] = Field(description="demo id -> influence score (higher is better)")
    estimate: Outcome | None = Field(description="estimated outcome of the selected set on the queries")
    exact: Outcome | None = Field(description="exact outcome of the selected set on the queries")
    diagnostics: dict[str, Any] | None = Field(description="estimate-error checks (gradient-based methods)")
    explored_subsets: int
    notes: dict[str, Any] = Field(description="what the method did (moves, rounds, ...)")
    passes: dict[str, Number] = Field(description="forward and backward rows, forward_equivalent, ...")
    timings: dict[str, Number] = Field(description="seconds per phase")
    cache: dict[str, int] = Field(description="the job's tensor cache hits and misses (anchor passes, exact runs, "
                                              "prompt scores, embeddings)")
    model: ModelInfo
    constraints: ConstraintsReport | None = Field(None, description="with any constraint: what it left")
    budget: BudgetReport | None = Field(None, description="with max_passes: what was spent")


class SelectionPlan(ResultPart):
    """A dry run's answer (models/plan.py): what the selection would cost, measured on this model and machine."""

    dry_run: Literal[True]
    method: str
    estimated_passes: int = Field(description="expected forward-equivalents of the whole job")
    passes_low: int = Field(description="the fewest it can spend (an adaptive search may stop early)")
    passes_high: int = Field(description="the most it can spend (at most max_passes)")
    estimated_seconds: Number = Field(description="the expected passes and model calls at the calibrated rates, "
                                      "plus the sentence model's texts at its timed rate")
    seconds_per_pass: Number = Field(description="calibrated on this request's prompts on a worker")
    seconds_per_call: Number = Field(description="calibrated likewise: each model call's fixed cost")
    calibration_passes: int = Field(description="what the calibration run spent")
    candidates: int = Field(description="pool demos the constraints leave")
