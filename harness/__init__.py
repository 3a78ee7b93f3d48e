"""The machinery the tests and the benchmarks share: the real service served on loopback (in a
thread, or as an `intercom-sync serve` process), a fresh database on SQLite or PostgreSQL,
waiting helpers, and webhook traffic that stays consistent with the simulator's workspace.

Plain Python on purpose: `bench/` imports it too, and must not depend on pytest."""
