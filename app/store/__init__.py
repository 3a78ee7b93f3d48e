"""The SQL store: models, engine set-up and every query the service runs."""
