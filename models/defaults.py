"""Request defaults shared by the engine, the CLI and the HTTP schema.

Kept free of torch and of the rest of the ML core, so that the API process of the Redis mode,
which only validates and queues requests, can import them without loading the model stack.
"""

DEFAULT_TEMPLATE = "Input: {input}\nLabel: {output}"
DEFAULT_SEPARATOR = "\n\n"
METHODS = ("gradient", "gradre", "exact", "random", "bm25", "topk-embed")  # the keys of selectors.SELECTORS
