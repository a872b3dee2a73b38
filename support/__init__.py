"""What the tests and the benchmarks both run, in one place that is neither: a private Redis
of the kind asked for (``redis_server``), a Redis Cluster and a Sentinel group, and the
worker and web processes as the Procfile starts them. Not installed with the packages."""
