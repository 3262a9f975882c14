"""Decisioning: what serving, evaluation, pipelines, training and the promotion gate must agree on.

Decision policies (thresholds, segment overrides, rules), the experiment book (arms, shares, lifecycle) and the rules
a model artifact must pass to be trusted (reviewed types, the feature set), with the shipped YAML under ``config/``.
It imports none of the parts that use it (``tests/unit/test_layering.py`` holds that).
"""
