"""Request and response bodies of the HTTP API (one place; routes stay thin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_serializer, model_validator

from iclsel.models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE, METHODS
from iclsel.workers.jobs import STATUSES


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | int | None = Field(None, description="defaults to the position in the list")
    input: str
    output: str
    metadata: dict[str, Any] | None = Field(None, description="free-form; a selection's `where` filters on it")


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


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    examples: list[ExampleIn] = Field(min_length=1)


class PoolAppend(PoolCreate):
    """Examples appended to a stored pool (ids default to the position in the grown pool)."""


class PoolOut(BaseModel):
    id: str = Field(description="content hash of the examples")
    size: int
    parent: str | None = Field(None, description="the pool this one was grown from (POST /v1/pools/{id}/examples)")
    examples: list[ExampleOut] | None = None


class SelectionCreate(BaseModel):
    """Choose k demonstrations from a pool for a set of labelled queries."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "pool": [{"input": "a wonderful film", "output": "positive"}, {"input": "dull and long", "output": "negative"},
                 {"input": "I loved it", "output": "positive"}, {"input": "a waste of time", "output": "negative"}],
        "queries": [{"input": "great acting", "output": "positive"}, {"input": "boring plot", "output": "negative"}],
        "k": 2, "method": "gradient"}]})

    pool: list[ExampleIn] | None = Field(None, min_length=1, description="the pool inline (or pool_id)")
    pool_id: str | None = Field(None, description="a pool stored with POST /v1/pools (or pool)")
    queries: list[ExampleIn] = Field(min_length=1)
    k: int = Field(4, ge=1)
    method: Literal[METHODS] = "gradient"  # type: ignore[valid-type]
    options: list[str] | None = Field(None, min_length=1, description="label verbalizers; default: outputs seen")
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

    @model_validator(mode="after")
    def one_pool(self) -> "SelectionCreate":
        if (self.pool is None) == (self.pool_id is None):
            raise ValueError("give exactly one of pool and pool_id")
        return self


class Progress(BaseModel):
    phase: str | None = None
    done: int = 0
    total: int = 0


class JobError(BaseModel):
    type: Literal["input", "internal"]
    field: str | None = None
    message: str


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
    slots: int = Field(description="params.retrieve: demos per prompt chosen per query")
    by: str
    queries: list[list[str]] = Field(description="each query's own demo ids, after the selected ones")
    targets: list[list[str]] = Field(description="each target's own demo ids")


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
    retrieved: Retrieved | None = Field(description="with params.retrieve, the per-query demos")
    scores: dict[str, Number] = Field(description="demo id -> influence score (higher is better)")
    estimate: Outcome | None = Field(description="estimated outcome of the selected set on the queries")
    exact: Outcome | None = Field(description="exact outcome of the selected set on the queries")
    diagnostics: dict[str, Any] | None = Field(description="estimate-error checks (gradient-based methods)")
    explored_subsets: int
    notes: dict[str, Any] = Field(description="what the method did (moves, rounds, ...)")
    passes: dict[str, Number] = Field(description="forward and backward rows, forward_equivalent, ...")
    timings: dict[str, Number] = Field(description="seconds per phase")
    cache: dict[str, int] = Field(description="anchor cache hits and misses")
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
    estimated_seconds: Number = Field(description="the expected passes and model calls at the calibrated rates")
    seconds_per_pass: Number = Field(description="calibrated on this request's prompts on a worker")
    seconds_per_call: Number = Field(description="calibrated likewise: each model call's fixed cost")
    calibration_passes: int = Field(description="what the calibration run spent")
    candidates: int = Field(description="pool demos the constraints leave")


class Job(BaseModel):
    id: str = Field(description="content hash of the normalised request and the model fingerprint")
    status: Literal[STATUSES]  # type: ignore[valid-type]
    progress: Progress
    result: SelectionResult | SelectionPlan | None = Field(
        None, description="when succeeded: the selection, or with dry_run the plan")
    error: JobError | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    worker: str | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
