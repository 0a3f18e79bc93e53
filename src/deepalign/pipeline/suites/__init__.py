"""The model suites ``deepalign reproduce`` runs on: how each builds its models and judges answers."""

from __future__ import annotations

from deepalign.errors import DeepAlignError
from deepalign.pipeline.stages import Suite
from deepalign.pipeline.suites import organism, smollm2

SUITES = {"organism": organism.SUITE, "smollm2": smollm2.SUITE}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise DeepAlignError(f"unknown suite '{name}': choose one of {', '.join(SUITES)}")
    return SUITES[name]
