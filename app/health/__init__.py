"""Health: readiness (`/readyz`), the store gauges of `/metrics`, and `intercom-sync check`."""
