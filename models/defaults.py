"""Request defaults shared by the engine, the CLI and the HTTP schema: the contract's (iclsel/contract.py).

Kept free of torch and of the rest of the ML core, so that the API process of the Redis mode,
which only validates and queues requests, can import them without loading the model stack.
"""

from iclsel.contract import (DEFAULT_OPTION_SCORE, DEFAULT_SEPARATOR, DEFAULT_TEMPLATE, METHODS,  # noqa: F401
                             OPTION_SCORES)
