"""Serving: the online decision path (compiled model scorers, model loading and caching, experiment assignment)."""
