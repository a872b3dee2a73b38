"""``python -m rsmq_core``: the ``rsmq`` command line."""

from .cli import main

raise SystemExit(main())
