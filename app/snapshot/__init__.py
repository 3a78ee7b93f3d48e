"""The C1-facing view of the store: baton-shaped objects and the cached snapshot body."""
