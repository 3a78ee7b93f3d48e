"""Leaves with no product knowledge: pausing the garbage collector, time formatting."""
