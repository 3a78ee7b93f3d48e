"""HTTP routes. Routes are thin: they check input and call plain functions."""
