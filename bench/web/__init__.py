"""The web process under load: browser-path latency, HTTP sends/s, websocket clients held at once.

Run from the repository root::

    .venv/bin/python -m bench.web              # full run, under four minutes
    .venv/bin/python -m bench.web --quick      # a smaller run, about a minute
    .venv/bin/python -m bench.web --json out.json
    .venv/bin/python -m bench.web --only fanout  # one part: browser, http, fanout or burst

Everything runs on a redis-server of its own (``rsmq_core.embedded.EmbeddedRedis``, a free
loopback port), with real processes: one ``python -m web`` (as the Procfile runs it, with the
app's default settings and LOG_LEVEL=WARNING) and one realtime ``python -m worker``
(support's ``WorkerProcess``, CONCURRENCY 8) whose handler, ``bench.handlers:noop``, does nothing,
so a message's events are queued, received, processing, done. The clients live in this process,
on one asyncio loop: ``bench/clients.py``'s raw HTTP/1.1 keep-alive connections and minimal
websocket client, so that the server, not the client, is what gets measured.

One module a part, each read top to bottom as what it measures (its docstring), the part as the
run calls it (``run``: progress lines, the figures it returns), how it measures (``measure``)
and its table in the report (``report``):

1. ``browser.py``: POST → 202, → "queued" event, → "done" event, at a steady rate.
2. ``http_load.py``: sends/s over keep-alive connections, against ``bench/bare.py``'s too.
3. ``fanout.py``: N tabs subscribed while M messages flow, each row on a fresh web process.
4. ``burst.py``: hundreds of subscribe frames at once, on a fresh web process.

``common.py`` holds what they share (the plan, the web process, a browser tab, paced POSTs);
``__main__.py`` starts the processes, runs the parts and prints the report.

Loopback only; every wait has a deadline and the run a time budget; every process started here is
stopped (SIGTERM, then SIGKILL) before the script ends.
"""
