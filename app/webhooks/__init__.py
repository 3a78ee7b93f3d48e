"""Intercom webhooks: intake into the durable inbox, and the applier that drains it."""
