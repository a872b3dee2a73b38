"""The fault-injection soak: messages through worker processes while things break.

``python -m bench.chaos`` (see ``__main__``) sends messages through worker processes that
reach Redis through a loopback proxy adding latency and dropping connections, and meanwhile
kills workers (kill -9, each restarted), kills Redis (kill -9, restarted on its AOF), runs
SCRIPT FLUSH, kills the subscribers' connections and cuts every proxied connection. At the
end every message is classified (``ledger``): handled, lost, duplicated or unexpected, and
the time to recover after each fault is measured.
"""
