"""Helpers of the CLI tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from click.testing import Result

from tests.support.servers import SmtpSink, body_text

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "wp-demo"
RECIPIENT = "ada@provider.example"


def make_manifest(egress: Callable[..., Result], outputs: Path, package_id: str, *extra: str) -> Result:
    return egress(
        "manifest",
        str(outputs),
        "--package-id",
        package_id,
        "--title",
        "Cohort tables",
        "--tier",
        "2",
        "--team",
        str(SAMPLE / "team.json"),
        *extra,
    )


def link_from_email(smtp: SmtpSink, to: str = RECIPIENT) -> str:
    match = re.search(r"Link for \S+: (http\S+)", body_text(smtp.to(to)[0]))
    assert match, "the recipient's email carries no link"
    return match.group(1)
