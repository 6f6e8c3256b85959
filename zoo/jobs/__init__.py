"""Jobs wing: datasets and fine-tune/export jobs on a SQLite or PostgreSQL queue.

Owns the job records and state machine (``records``), the store (``store``), the manager that
the server's services call (``manager``), the worker loop (``worker``), the per-job child
process (``child``), training (``training``), dataset archives (``datasets``) and searches
over fine-tuning settings, whose trials are fine-tune jobs (``search``).
May import: ``zoo.catalog``, ``zoo.export``, the top-level modules. Never ``zoo.serving``.
"""
