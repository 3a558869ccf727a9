"""A real browser (Debian's chromium, driven by Playwright) against the real HTTP routes.

The routes are served once per session by the project's local Functions host (``devhost``), in
this process. Each handler calls ``get_services()``, which the ``app_services`` fixture rebuilds
from each test's own settings, so one server serves every test's isolated containers and tables.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from tests.support.servers import ROOT, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# Binding expressions the app's triggers name; the host resolves them when it indexes the app.
_INDEX_SETTINGS = {
    "STAGING_CONTAINER": "staging_container",
    "RELEASE_QUEUE": "release_queue",
    "EXPIRY_SCHEDULE": "expiry_schedule",
}


@pytest.fixture(scope="session")
def function_host() -> Iterator[str]:
    """The app's HTTP routes on a free port, as ``python -m devhost`` serves them; yields the base URL."""
    import function_app
    from devhost.host import index_app, make_http_server

    # ``get_functions()`` may run once per FunctionApp object, and tests/functions/test_indexing.py
    # indexes ``function_app.app`` itself: index a shallow copy (same functions, its own name check).
    app = copy.copy(function_app.app)
    app.functions_bindings = None
    with pytest.MonkeyPatch.context() as env:
        for name, field in _INDEX_SETTINGS.items():
            if name not in os.environ:
                env.setenv(name, str(Settings.model_fields[field].default))
        indexed = index_app(app)
    host = json.loads((ROOT / "host.json").read_text())
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    port = free_port()
    server = make_http_server(indexed.routes, port, prefix, function_key=None)
    thread = threading.Thread(target=server.serve_forever, name="browser-tests-host", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def settings(settings: Settings, function_host: str) -> Settings:
    """The test's isolated settings, with sign-off links that point at the host above."""
    return settings.model_copy(update={"public_base_url": function_host})


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: run `make install` (it installs it with apt)",
            pytrace=False,
        )
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        except Error as exc:
            pytest.fail(f"chromium at {CHROMIUM} did not start ({exc}); run `make install`", pytrace=False)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[int, int], Any]]:
    """``open_page(width, height)``: a fresh page (own cookies, own storage) at that viewport."""
    contexts: list[Any] = []

    def make(width: int, height: int) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
