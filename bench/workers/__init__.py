"""Realtime and polling workers side by side: latency, idle cost, wasted receives, throughput.

Run from the repository root::

    .venv/bin/python -m bench.workers              # full run, about three minutes
    .venv/bin/python -m bench.workers --quick      # a smaller run, about a minute
    .venv/bin/python -m bench.workers --json out.json
    .venv/bin/python -m bench.workers --only latency    # or throughput: one half of it

The two halves, one module each:

- ``latency.py``: realtime and polling workers under the same load, then idle: how long a
  message waits for its handler, how many receive calls a handled message costs, what idle
  workers ask Redis;
- ``throughput.py``: one realtime worker draining a full queue, for CONCURRENCY 1, 8 and 32.

``plan.py`` holds the sizes of a run and the configurations, ``testbed.py`` one
configuration's redis-server, workers and sender, ``report.py`` the tables and the targets
printed at the end, and ``__main__.py`` runs it all; ``bench/harness.py`` holds what every
benchmark shares.

Everything runs on loopback; every wait has a deadline and the whole run a budget; every
process started here is stopped (SIGTERM, then SIGKILL) before the script ends.
"""
