"""The SDK baseline: what a user gets from singer-sdk's cookiecutter target template.

A ``Target`` subclass with the template's two settings and a ``BatchSink`` whose
``process_batch`` does nothing (the template's ``max_size = 10000``). Everything else is
the SDK's default: its standard-library JSON reader, per-record JSON-schema validation,
timestamp parsing, metadata handling and batching. Comparing the target against this says
whether it costs more or less than "an empty SDK target" for the same input.

Run as ``python -m bench.sdk_baseline < stream.jsonl`` (no config needed).
"""

from __future__ import annotations

from typing import Any

from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink
from singer_sdk.target_base import Target


class DiscardSink(BatchSink):
    """Collects each batch like the template's sink, then drops it."""

    max_size = 10000  # the cookiecutter template's value

    def process_batch(self, context: dict[str, Any]) -> None:
        """Discard the batch: the baseline measures the SDK, not a destination."""


class BaselineTarget(Target):
    """The cookiecutter template's target with nothing filled in."""

    name = "target-bench-baseline"
    config_jsonschema = th.PropertiesList(
        th.Property("filepath", th.StringType, description="The path to the target output file"),
        th.Property(
            "file_naming_scheme",
            th.StringType,
            description="The scheme with which output files will be named",
        ),
    ).to_dict()
    default_sink_class = DiscardSink


if __name__ == "__main__":
    BaselineTarget.cli()
