"""Benchmarks (tools around the domain, not the domain): components, HTTP serving, the uploader."""
