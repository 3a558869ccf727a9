"""Fuzzing every route of the OpenAPI document against the local host: never a 500, never a trace.

Three passes, each bounded and deterministic (``derandomize``, no example database):

- schemathesis reads ``functions/openapi.json`` and sends, for every operation, valid requests and
  invalid ones (wrong types, out-of-range values, missing or unknown parameters and properties,
  huge strings, a malformed ``X-MS-CLIENT-PRINCIPAL``), then checks each answer against the
  document (documented status, content type and body schema);
- Hypothesis sends what no schema describes: arbitrary bytes as JSON or form bodies, odd path
  values and content types, unknown query parameters, odd headers, missing and wrong keys;
- a sweep sends every known nasty body (JSON nested past the parser's limit, over 64 KiB, a lone
  surrogate, a digit ``int()`` refuses...) and malformed principal to every route, not left to chance.

The routes are served in this process by the local host (``devhost.host.make_http_server``) with a
function key. A package awaiting sign-off (with its links) and a delivered one (with its grants) are
made first, and the generated path values are sometimes swapped for theirs, so the fuzzing reaches
records that exist as well as ones that do not.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from azure.storage.blob import BlobServiceClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.bootstrap import Services
from tests.e2e.test_http_edges import KEY, app_routes, call, serve
from tests.support.flow import egress, signoff_tokens
from tests.support.packages import SAMPLE_FILES, manifest_for, new_package_id, stage
from tests.support.servers import ROOT, SmtpSink

pytestmark = pytest.mark.integration
DOCUMENT = ROOT / "functions" / "openapi.json"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Seeded:
    """Records that exist, for the generated requests to hit now and then."""

    package_ids: tuple[str, ...]
    grant_ids: tuple[str, ...]
    tokens: tuple[str, ...]


@pytest.fixture(scope="module")
def host() -> Iterator[int]:
    with serve(app_routes()) as port:
        yield port


@pytest.fixture
def seeded(app_services: Services, blob_service: BlobServiceClient, smtp: SmtpSink) -> Seeded:
    awaiting = new_package_id()
    raw = stage(
        blob_service,
        app_services.settings.staging_container,
        awaiting,
        SAMPLE_FILES,
        manifest_for(awaiting, SAMPLE_FILES),
    )
    app_services.intake.process(awaiting, raw)
    tokens = tuple(signoff_tokens(smtp, awaiting).values())
    delivered = new_package_id()
    raw = stage(
        blob_service,
        app_services.settings.staging_container,
        delivered,
        SAMPLE_FILES,
        manifest_for(delivered, SAMPLE_FILES),
    )
    assert egress(app_services, smtp, delivered, raw) == "granted"
    grants = tuple(g.grant_id for g in app_services.registry.list_grants(package_id=delivered))
    assert len(tokens) == 3 and grants
    return Seeded((awaiting, delivered), grants, tokens)


def assert_no_trace(status: int, body: bytes, what: str) -> None:
    text = body.decode("utf-8", errors="replace")
    assert status < 500, f"{what} answered {status}: {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text, f"{what} answered a stack trace: {text[:500]}"


def swap_in(values: dict[str, Any] | None, seeded: Seeded, pick: int) -> None:
    """Now and then, put a record that exists where the generator put an arbitrary one."""
    if not values or not pick:
        return
    for name, choices in (
        ("package_id", seeded.package_ids),
        ("grant_id", seeded.grant_ids),
        ("token", seeded.tokens),
    ):
        if name in values:
            values[name] = choices[(pick - 1) % len(choices)]


# -- schemathesis: the document's operations, valid and invalid ---------------------------------

SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
LABELS = sorted(result.ok().label for result in SCHEMA.get_all_operations())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 12  # for each operation, this many valid and this many invalid requests


def test_schemathesis_finds_no_500_and_no_trace(host: int, seeded: Seeded) -> None:
    sent: Counter[str] = Counter()
    base_url = f"http://127.0.0.1:{host}/api"
    for label in LABELS:
        operation = SCHEMA.find_operation_by_label(label)
        assert operation is not None
        modes = [schemathesis.GenerationMode.POSITIVE]
        if list(operation.iter_parameters()) or list(operation.body):  # else nothing can be made invalid
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode), pick=st.integers(min_value=0, max_value=3))
            @settings(FUZZ, max_examples=EXAMPLES_PER_OPERATION)
            def run(case: Any, pick: int) -> None:
                swap_in(case.path_parameters, seeded, pick)
                response = case.call(base_url=base_url, headers={"x-functions-key": KEY}, timeout=30)
                sent[case.operation.label] += 1
                assert_no_trace(response.status_code, response.content, f"{case.method} {case.formatted_path}")
                case.validate_response(response, checks=CHECKS)

            run()
    print(f"schemathesis sent {sum(sent.values())} requests: {dict(sent)}")
    assert set(sent) == set(LABELS) and sum(sent.values()) >= 100


# -- Hypothesis: what no schema describes --------------------------------------------------------

_DOCUMENT = json.loads(DOCUMENT.read_text())
OPERATIONS = sorted(
    (method.upper(), "/api" + path)
    for path, item in _DOCUMENT["paths"].items()
    for method in item
    if method in {"get", "post"}
)
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
NASTY_BODY_LIST = [
    b"[" * 10_000 + b"]" * 10_000,  # deeper than the JSON parser goes
    b'{"reason": "' + b"x" * 70_000 + b'"}',  # over the sign-off form's 64 KiB
    b'{"reason": "\\ud800"}',  # a lone surrogate
    b"\xef\xbb\xbf{}",  # a byte order mark
    b'{"decision": "approve", "tier": "\xc2\xb2"}',  # a digit to str.isdigit, not to int()
    b"decision=approve&tier=%C2%B2&decision=refuse",
    b"decision=approve&tier=%D9%A3",
    b"decision=refuse&comment=%FF%FE",
]
NASTY_BODIES = st.sampled_from(NASTY_BODY_LIST)
BODIES = st.one_of(
    NASTY_BODIES,
    NASTY_BODIES,
    st.binary(max_size=300),  # not JSON, not UTF-8
    st.text(max_size=300).map(str.encode),
    _JSON.map(lambda v: json.dumps(v).encode()),  # JSON of the wrong shape
    st.fixed_dictionaries(
        {},
        optional={
            "decision": st.sampled_from(["approve", "refuse", "APPROVE", "", "maybe"]) | _JSON,
            "tier": st.sampled_from([0, 4, 5, -1, 2**70, "2", "²", "٣", 2.0, True, None]) | _JSON,
            "comment": st.text(max_size=20) | _JSON,
            "reason": st.text(max_size=20) | _JSON,
        },
    ).map(lambda v: json.dumps(v).encode()),  # nearly right
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "APPLICATION/JSON",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/json;;;",
    ]
)
PATH_VALUES = st.one_of(
    st.text(max_size=60),
    st.text(st.characters(codec="ascii"), min_size=43, max_size=43),
    st.sampled_from(["..", ".", "%", "%2F", "a/b", " ", "\x00", "x" * 5000, "wp-" + "a" * 40, "WP-UPPER"]),
)
PRINCIPALS = st.one_of(
    st.none(),
    _HEADER_TEXT,
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    _JSON.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
    st.lists(
        st.fixed_dictionaries({}, optional={"typ": _JSON | st.sampled_from(["roles", "email"]), "val": _JSON}),
        max_size=3,
    ).map(lambda claims: base64.b64encode(json.dumps({"claims": claims}).encode()).decode()),
)


def one_in(n: int, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy`` one time in ``n``, else None: keeps most requests past the earlier checks."""
    return st.integers(min_value=1, max_value=n).flatmap(lambda k: strategy if k == 1 else st.none())


@st.composite
def raw_requests(draw: st.DrawFn, seeded: Seeded, method: str, template: str) -> tuple[str, str, str, Any, Any]:
    """(method, route, path with query, body, headers) for one route of the document, odd in every part."""
    values = {name: draw(PATH_VALUES) for name in ("package_id", "grant_id", "token") if "{" + name + "}" in template}
    swap_in(values, seeded, draw(st.integers(min_value=0, max_value=2)))
    path = template.format(**{name: quote(value, safe="") for name, value in values.items()})
    query = draw(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=4))
    keyed = draw(st.sampled_from(["header", "header", "header", "query", "wrong", "none"]))
    if keyed in ("query", "wrong"):
        query["code"] = KEY if keyed == "query" else KEY[::-1]
    if query:
        path += "?" + urlencode(query)
    headers = draw(
        st.dictionaries(
            st.sampled_from(["Accept", "X-Forwarded-For", "Cookie", "X-Unknown", "Origin", "Accept-Encoding"]),
            _HEADER_TEXT,
            max_size=3,
        )
    )
    if keyed == "header":
        headers["x-functions-key"] = KEY
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["Content-Type"] = content_type
    principal = draw(one_in(4, PRINCIPALS))
    if principal is not None:
        headers["X-MS-CLIENT-PRINCIPAL"] = principal
    body = draw(st.none() | BODIES) if method == "POST" else draw(one_in(4, BODIES))
    return method, template, path, body, headers


EXAMPLES_PER_ROUTE = 20


def test_hypothesis_finds_no_500_and_no_trace(host: int, seeded: Seeded) -> None:
    sent: Counter[str] = Counter()
    for method, template in OPERATIONS:

        @given(request=raw_requests(seeded, method, template))
        @settings(FUZZ, max_examples=EXAMPLES_PER_ROUTE)
        def run(request: tuple[str, str, str, Any, Any]) -> None:
            method, route, path, body, headers = request
            connection = http.client.HTTPConnection("127.0.0.1", host, timeout=30)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                status, answer = response.status, response.read()
            finally:
                connection.close()
            sent[f"{method} {route}"] += 1
            assert_no_trace(status, answer, f"{method} {path[:200]} with {body!r:.200}")
            if response.getheader("Content-Type", "").startswith("application/json") and status >= 400:
                assert set(json.loads(answer)) == {"error", "message"}

        run()
    print(f"hypothesis sent {sum(sent.values())} requests")
    assert sum(sent.values()) == len(OPERATIONS) * EXAMPLES_PER_ROUTE


NASTY_PRINCIPALS = [
    "not base64!",
    base64.b64encode(b"[" * 5000 + b"]" * 5000).decode(),  # deeper than the JSON parser goes
    base64.b64encode(b'{"claims": "all"}').decode(),
    base64.b64encode(b'{"claims": [{"typ": ["roles"], "val": {"a": 1}}]}').decode(),
    "caf\u00e9",
]


def test_every_route_survives_the_known_nasties(host: int, seeded: Seeded) -> None:
    """Not left to chance: every nasty body and principal above, on every route, with the key."""
    sent = 0
    filled = {"package_id": seeded.package_ids[1], "grant_id": seeded.grant_ids[0], "token": "A" * 43}
    cases: list[tuple[bytes | None, dict[str, str]]] = [
        (body, {"Content-Type": content_type})
        for body in NASTY_BODY_LIST
        for content_type in ("application/json", "application/x-www-form-urlencoded")
    ]
    cases += [(b"{}", {"X-MS-CLIENT-PRINCIPAL": principal}) for principal in NASTY_PRINCIPALS]
    for method, template in OPERATIONS:
        path = template.format(**{k: v for k, v in filled.items() if "{" + k + "}" in template})
        for body, headers in cases:
            status, _, answer = call(host, method, path, body=body, headers={"x-functions-key": KEY, **headers})
            sent += 1
            assert_no_trace(status, answer, f"{method} {path} with {headers} and {body!r:.100}")
    print(f"the sweep sent {sent} requests")
