"""Server-side templates (Jinja2, autoescaped) for the sign-off pages and the emails.

One base layout, ``base.html``, frames every page and every HTML email, so they read alike.
Each email's text part comes from its ``email_<name>.txt`` twin (extending ``email_base.txt``, not
autoescaped) fed the same data; ``_email.html`` and ``_email.txt`` hold the blocks they share.
Inline styles only: mail clients drop style sheets, and the pages need no JavaScript.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n:,} bytes"


# A command's words stay whole when a narrow screen wraps it (``--reason`` never splits at its
# hyphens). A longer word may break: a path after a "/", anything else (a link) anywhere.
_UNBROKEN_WORD = 24


def _word_html(word: str) -> Markup:
    if len(word) <= _UNBROKEN_WORD:
        return Markup('<span style="white-space:nowrap;">{}</span>').format(word)
    if "/" not in word or "://" in word:
        return Markup('<span style="word-break:break-all;">{}</span>').format(word)
    return Markup("/<wbr>").join(word.split("/"))


def _command_html(text: str) -> Markup:
    """``text`` escaped, for a box that wraps it between its words; copying it gives ``text`` back."""
    return Markup("\n").join(
        Markup(" ").join(_word_html(word) if word else Markup("") for word in line.split(" "))
        for line in text.split("\n")
    )


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
    env.filters["command"] = _command_html
    env.filters["utc"] = lambda moment: moment.strftime("%Y-%m-%d %H:%M UTC")
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
