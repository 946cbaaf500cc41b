"""Request and response bodies of the HTTP API (routes stay thin); a selection's are the contract's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from iclsel.contract import (BudgetReport, ConstraintsReport, ExampleIn, ExampleOut, ModelInfo, Outcome,  # noqa: F401
                             Prompt, Retrieved, SelectionPlan, SelectionRequest, SelectionResult)
from iclsel.workers.jobs import STATUSES

SelectionCreate = SelectionRequest  # the request body: the contract itself (iclsel/contract.py)


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
