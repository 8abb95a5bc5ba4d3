"""Flax front ends, temporal summaries and heads, and the registry that composes them."""
