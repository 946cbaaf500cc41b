"""iclsel: choose in-context demonstrations by gradient estimation.

The ML core lives in ``iclsel.models`` (top-level folder ``models/``), the HTTP front end in
``iclsel.app`` (``app/``) and job execution in ``iclsel.workers`` (``workers/``).
"""

__version__ = "0.1.0"
