"""A LangChain example selector backed by a running iclsel service (`pip install iclsel[langchain]`).

    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate
    from iclsel.client import Client
    from iclsel.langchain import IclselExampleSelector

    selector = IclselExampleSelector(Client("http://127.0.0.1:8000"), examples=pool, queries=labelled, k=4)
    prompt = selector.few_shot_prompt()   # a FewShotPromptTemplate in the request's template and separator
    prompt.format(input="a dull film")

`few_shot_prompt()` builds the FewShotPromptTemplate from the selection's own `template` and `separator`, so
the text LangChain formats for an input is exactly the prompt iclsel scored for it (`selection().prompt.text`
followed by the query). A FewShotPromptTemplate built by hand must use the same template (with `input_key` and
`output_key` for {input} and {output}) and `example_separator`, else it sends a prompt that was never scored.

What `select_examples(input_variables)` returns: the k demos iclsel chose from `examples` (the pool)
for the labelled `queries`, in prompt order, as the very dicts that were given (extra keys kept).
- Without `params={"retrieve": r}`, the demos depend on the pool and the queries, not on the input:
  one selection per pool state serves every input (kept on the selector; the service would answer
  the same request with the same job anyway).
- With `params={"retrieve": r}`, `input_variables[input_key]` is sent as a target: the answer is the
  k - r demos shared by all inputs, then this input's own r nearest pool demos (best last).
- When the selection returned per-query retrieval, each input gets its own k nearest demos; when it returned
  a hybrid, the shared demos and then the input's own k//2 nearest other demos by its retrieval (in vote order
  where `params.vote_order` names that retrieval, as the service orders them).
`add_example` appends to the pool; the next call selects from the grown pool. The pool is stored on
the service once per state (`POST /v1/pools`) and selections refer to it by id.
"""

from __future__ import annotations

from typing import Any

from langchain_core.example_selectors import BaseExampleSelector
from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

from .client import ApiError, Client, SelectionResult
from .contract import DEFAULT_VOTE_ORDER, HYBRIDS, majority_last
from .models.defaults import DEFAULT_SEPARATOR, DEFAULT_TEMPLATE


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

    def _select(self, targets: list[str], params: dict[str, Any] | None = None) -> SelectionResult:
        fields = {**self.fields, **({"params": params} if params is not None else {})}
        request = dict(queries=self.queries, k=self.k, **fields, **({"targets": targets} if targets else {}))
        try:
            return self.client.select(pool_id=self.pool_id(), timeout=self.timeout, **request)
        except ApiError as error:
            if error.field != "pool_id":
                raise
            self._pool_id = None  # the service lost the pool (restart, expiry, deleted): store it again
            return self.client.select(pool_id=self.pool_id(), timeout=self.timeout, **request)

    def selection(self) -> SelectionResult:
        """The selection for the queries: its strategy, demos (shared by every input when it returned a set), the
        scored prompt and its outcome."""
        if self._shared is None:
            self._shared = self._select([])
        return self._shared

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The shared demos when the selection returned a set; else this input's own: a selection for it as a
        target, with the strategy the selection chose pinned (per-query retrieval runs no search)."""
        shared = self.selection()
        if shared.retrieved is None:
            ids = [demo.id for demo in shared.selected]
        else:
            hybrid = shared.strategy is not None and shared.strategy.chosen in HYBRIDS
            params = dict(self.fields.get("params") or {})
            if shared.strategy is not None:  # a hybrid's neighbours are its retrieval's
                params["strategy"] = HYBRIDS[shared.strategy.chosen] if hybrid else shared.strategy.chosen
            if hybrid:  # this input's k nearest by similarity (the nearest last), to take the nearest outside the head
                params["vote_order"] = []
            result = self._select([str(input_variables[self.input_key])], params)
            ids = [demo.id for demo in result.selected] + result.retrieved.targets[0]
            if hybrid:  # the shared head, then this input's nearest outside it (k nearest always hold enough), in
                # the order the service gives a hybrid's own demos: vote order where its retrieval takes it
                head = [demo.id for demo in shared.selected]
                ids = head + self._ordered([i for i in ids if i not in head][-shared.retrieved.slots:],
                                           shared.retrieved.by)
        return [self.examples[int(id)] for id in ids]

    def _ordered(self, nearest: list[str], by: str) -> list[str]:
        """``nearest`` (ids, the nearest last) as the service orders a hybrid's own demos: in vote order
        (contract.majority_last) where the request's params.vote_order names ``by``, else as they are."""
        if by not in (self.fields.get("params") or {}).get("vote_order", DEFAULT_VOTE_ORDER):
            return nearest
        labels = [str(example[self.output_key]) for example in self.examples]
        return [str(i) for i in majority_last([int(i) for i in nearest], labels)]

    def few_shot_prompt(self, prefix: str = "") -> FewShotPromptTemplate:
        """A FewShotPromptTemplate on this selector that formats the prompt iclsel scores: each demo in the
        request's template, followed by the separator, then the input up to the label (``prefix``, if any, and
        the separator before the demos)."""
        template = self.fields.get("template") or DEFAULT_TEMPLATE
        head = template.split("{output}")[0].rstrip()
        rename = {"{input}": "{" + self.input_key + "}", "{output}": "{" + self.output_key + "}"}
        for placeholder, name in rename.items():
            template, head = template.replace(placeholder, name), head.replace(placeholder, name)
        return FewShotPromptTemplate(example_selector=self, prefix=prefix, suffix=head,
                                     example_prompt=PromptTemplate.from_template(template),
                                     example_separator=self.fields.get("separator", DEFAULT_SEPARATOR),
                                     input_variables=[self.input_key])
