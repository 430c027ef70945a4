"""Test support (testonly): a strict reading of an exposition through prometheus_client's parser."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_exposition(text: str) -> tuple[Series, dict[str, str]]:
    """Every sample by (name, labels) and every family's type, through prometheus_client's parser;
    fails on a duplicate series, a family without HELP or TYPE, or anything the parser refuses."""
    series: Series = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        assert family.type in ("counter", "gauge"), f"{family.name} has type {family.type}"
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in series, f"duplicate series {key}"
            series[key] = sample.value
    for line in text.split(
        "\n"
    ):  # the parser infers a family for a sample without TYPE: be strict here
        if line and not line.startswith("#"):
            match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert match is not None, f"no metric name at the start of {line!r}"
            name = match.group()
            assert f"# TYPE {name} " in text and f"# HELP {name} " in text, line
    return series, types
