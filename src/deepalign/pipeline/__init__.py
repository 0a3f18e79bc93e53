"""Pipelines: what composes the layers below into runs.

Built-in model names (``builtins``), the end-to-end attack runners (``attacks``: generate, judge,
summarize, table, figure), the KL run, fine-tuning attacks, triplets for augmentation, the audit card,
and ``reproduce`` with its stages and suites. Only this package knows organism, train, judges and
report together.
"""
