"""Leaves every layer may use: logging (JSON lines, redaction, request ids) and metrics."""
