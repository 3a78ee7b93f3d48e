"""intercom-sync: who has access to an Intercom workspace, kept current for C1."""

__version__ = "0.1.0"
