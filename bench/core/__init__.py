"""Throughput of rsmq_core next to Node RSMQ 0.12 and PyRSMQ, all on one redis-server.

Run from the repository root::

    .venv/bin/python -m bench.core              # full run, about two minutes
    .venv/bin/python -m bench.core --quick      # a smaller run, a few seconds
    .venv/bin/python -m bench.core --json out.json
    .venv/bin/python -m bench.core --rounds 5   # more rounds; the best one counts

The script starts its own redis-server on a free loopback port (``support.redis_server``) and
stops it at the end. Every client and mode warms up on a queue of its own first; then each
operation is timed on a fresh queue with a fixed number of messages. Queues that are received
from or popped are filled beforehand, outside the timing, and every queue is checked afterwards
(all sent, or all consumed).

Operations: ``send`` (one message per call), ``receive+delete`` (receive a message, then delete
it) and ``pop``. Modes: one caller awaiting each call (sequential), 50 callers at once (threads
for the sync client, coroutines for AsyncRSMQ, promises for Node), and rsmq_core's batch calls
(``send_messages``, ``receive_messages`` + ``delete_messages``, ``pop_messages``, 100 messages a
call). Node RSMQ needs ``node`` and the rsmq package in ``.node/node_modules`` (or the folder
named by RSMQ_NODE_MODULES); PyRSMQ comes with ``pip install -e '.[bench]'``. A client that is
missing is left out with a note.

The modules: ``__main__.py`` says which rows are measured and prints them; ``measure.py``
makes, times and checks the queues; one runner a client (``sync_client.py``,
``async_client.py``, ``node.py``, ``pyrsmq.py``) on what ``runner.py`` shares; ``report.py``
builds the table and the targets.
"""
