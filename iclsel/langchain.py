"""A LangChain example selector backed by a running iclsel service (`pip install iclsel[langchain]`).

    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate
    from iclsel.client import Client
    from iclsel.langchain import IclselExampleSelector

    selector = IclselExampleSelector(Client("http://127.0.0.1:8000"), examples=pool, queries=labelled, k=4)
    prompt = FewShotPromptTemplate(example_selector=selector, suffix="Input: {input}\\nLabel:",
                                   example_prompt=PromptTemplate.from_template("Input: {input}\\nLabel: {output}"),
                                   input_variables=["input"])
    prompt.format(input="a dull film")

What `select_examples(input_variables)` returns: the k demos iclsel chose from `examples` (the pool)
for the labelled `queries`, in prompt order, as the very dicts that were given (extra keys kept).
- Without `params={"retrieve": r}`, the demos depend on the pool and the queries, not on the input:
  one selection per pool state serves every input (kept on the selector; the service would answer
  the same request with the same job anyway).
- With `params={"retrieve": r}`, `input_variables[input_key]` is sent as a target: the answer is the
  k - r demos shared by all inputs, then this input's own r nearest pool demos (best last).
`add_example` appends to the pool; the next call selects from the grown pool. The pool is stored on
the service once per state (`POST /v1/pools`) and selections refer to it by id.
"""

from __future__ import annotations

from typing import Any

from langchain_core.example_selectors import BaseExampleSelector

from .client import ApiError, Client, SelectionResult


class IclselExampleSelector(BaseExampleSelector):
    """Examples for a FewShotPromptTemplate, chosen by iclsel (see the module docstring).

    client: an iclsel.client.Client; examples: the pool and queries: labelled queries, LangChain
    example dicts whose `input_key` is the text and `output_key` the label; k: demos per prompt;
    timeout: seconds a selection may take; fields: any other selection field (method, params, seed,
    options, template, separator).
    """

    def __init__(self, client: Client, examples: list[dict[str, Any]], queries: list[dict[str, Any]], k: int = 4,
                 *, input_key: str = "input", output_key: str = "output", timeout: float | None = 300, **fields):
        self.client, self.k, self.timeout, self.fields = client, k, timeout, fields
        self.input_key, self.output_key = input_key, output_key
        self.examples = list(examples)
        self.queries = [self._record(example) for example in queries]
        self._pool_id: str | None = None
        self._shared: SelectionResult | None = None  # the selection every input gets (without retrieve)

    def _record(self, example: dict[str, Any], id: str | None = None) -> dict[str, str]:
        return {**({"id": id} if id is not None else {}),
                "input": str(example[self.input_key]), "output": str(example[self.output_key])}

    @property
    def retrieves(self) -> bool:
        return bool((self.fields.get("params") or {}).get("retrieve"))

    def add_example(self, example: dict[str, Any]) -> None:
        self._record(example)  # KeyError now rather than at the next selection
        self.examples.append(example)
        self._pool_id, self._shared = None, None

    def pool_id(self) -> str:
        """The id of the pool as stored on the service (stored on first use; ids are positions)."""
        if self._pool_id is None:
            records = [self._record(example, str(i)) for i, example in enumerate(self.examples)]
            self._pool_id = self.client.create_pool(records).id
        return self._pool_id

    def _select(self, targets: list[str]) -> SelectionResult:
        request = dict(queries=self.queries, k=self.k, **self.fields, **({"targets": targets} if targets else {}))
        try:
            return self.client.select(pool_id=self.pool_id(), timeout=self.timeout, **request)
        except ApiError as error:
            if error.field != "pool_id":
                raise
            self._pool_id = None  # the service lost the pool (restart, expiry, deleted): store it again
            return self.client.select(pool_id=self.pool_id(), timeout=self.timeout, **request)

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        if self.retrieves:
            result = self._select([str(input_variables[self.input_key])])
            ids = [demo.id for demo in result.selected] + result.retrieved.targets[0]
        else:
            if self._shared is None:
                self._shared = self._select([])
            ids = [demo.id for demo in self._shared.selected]
        return [self.examples[int(id)] for id in ids]
