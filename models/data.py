"""Labelled examples, reading them, and the errors raised for bad input."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


from iclsel.contract import InputError  # noqa: F401  (one class: the contract's parsing raises it too)


@dataclass(frozen=True)
class Example:
    id: str
    input: str
    output: str
    metadata: dict | None = None  # free-form JSON object a request's `where` filters on; not part of the prompt

    def to_dict(self) -> dict:
        record = asdict(self)
        if self.metadata is None:  # absent rather than null: records without metadata hash as before
            del record["metadata"]
        return record


def examples_from_records(records: list[dict], field: str) -> list[Example]:
    """Validate raw records ({"id"?, "input", "output", "metadata"?}) into Examples; ids default to the position."""
    examples: list[Example] = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        where = f"{field}[{position}]"
        if not isinstance(record, dict):
            raise InputError(where, "must be an object with 'input' and 'output'")
        for key in ("input", "output"):
            if not isinstance(record.get(key), str):
                raise InputError(f"{where}.{key}", "is required and must be a string")
        if not record["output"].strip():
            raise InputError(f"{where}.output", "must not be empty")
        raw_id = record.get("id", position)
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise InputError(f"{where}.id", "must be a string or an integer")
        example_id = str(raw_id)
        if example_id in seen:
            raise InputError(f"{where}.id", f"duplicate id {example_id!r}")
        seen.add(example_id)
        metadata = record.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InputError(f"{where}.metadata", "must be an object")
        examples.append(Example(id=example_id, input=record["input"], output=record["output"], metadata=metadata))
    return examples


def read_jsonl(path: str | Path, field: str) -> list[Example]:
    """Read one JSON object per line; blank lines are skipped; ids default to the line number (0-based)."""
    return examples_from_records(read_records(path, field), field)


def read_inputs(path: str | Path, field: str) -> list[str]:
    """The "input" of each JSON object per line (labels, if any, are ignored): inputs to prompt for."""
    inputs = []
    for position, record in enumerate(read_records(path, field)):
        if not isinstance(record, dict) or not isinstance(record.get("input"), str):
            raise InputError(f"{field}[{position}].input", "each line must be an object with a string input")
        inputs.append(record["input"])
    return inputs


def read_records(path: str | Path, field: str) -> list:
    """The JSON value on each non-blank line; objects get "id" = line number (0-based) unless they have one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(field, f"cannot read {path}: {error}") from error
    records = []
    for line_number, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(field, f"{path} line {line_number + 1} is not valid JSON: {error.msg}") from error
        if isinstance(record, dict):
            record.setdefault("id", line_number)
        records.append(record)
    return records
