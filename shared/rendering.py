"""Server-side templates (Jinja2, autoescaped) for the sign-off pages and the emails.

One base layout, ``base.html``, frames every page and every HTML email, so they read alike.
Text parts of emails come from ``.txt`` templates fed the same data. Inline styles only: mail
clients drop style sheets, and the pages need no JavaScript.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n:,} bytes"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["size"] = _size
    env.filters["utc"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M UTC")
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
