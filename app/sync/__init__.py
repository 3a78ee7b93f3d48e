"""The sync engine: baseline runs against Intercom's REST API and their scheduling."""
