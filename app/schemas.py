"""Request and response bodies of the HTTP API (one place; routes stay thin)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iclsel.models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE, METHODS
from iclsel.workers.jobs import STATUSES


class ExampleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | int | None = Field(None, description="defaults to the position in the list")
    input: str
    output: str


class ExampleOut(BaseModel):
    id: str
    input: str
    output: str


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    examples: list[ExampleIn] = Field(min_length=1)


class PoolOut(BaseModel):
    id: str = Field(description="content hash of the examples")
    size: int
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


class Job(BaseModel):
    id: str = Field(description="content hash of the normalised request and the model fingerprint")
    status: Literal[STATUSES]  # type: ignore[valid-type]
    progress: Progress
    result: dict[str, Any] | None = Field(None, description="Engine.select result (see models/engine.py)")
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
