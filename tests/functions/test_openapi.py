"""The OpenAPI document (functions/openapi.json) against the routes the app registers, so neither drifts."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import azure.functions as func
import pytest

from shared import errors
from tests.support.servers import ROOT

DOCUMENT = ROOT / "functions" / "openapi.json"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
KEY_SCHEMES = {"functionKey", "functionKeyQuery"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(DOCUMENT.read_text())


@pytest.fixture(scope="module")
def routes() -> dict[tuple[str, str], str]:
    """{(route, METHOD): auth level} of every HTTP function ``function_app.app`` registers."""
    import function_app

    # get_functions() may run once per app object (tests/functions/test_indexing.py indexes the
    # app itself): index a shallow copy, as the local host's tests do.
    app = copy.copy(function_app.app)
    app.functions_bindings = None
    found: dict[tuple[str, str], str] = {}
    for function in app.get_functions():
        trigger = function.get_bindings_dict()["bindings"][0]
        if trigger["type"] != "httpTrigger":
            continue
        for method in trigger["methods"]:
            found[(trigger["route"], str(getattr(method, "value", method)).upper())] = str(trigger["authLevel"].value)
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(path, METHOD, the path item, the operation) for every operation in the document."""
    return [
        (path, method.upper(), item, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        pointer = node["$ref"]
        assert pointer.startswith("#/"), pointer
        node = document
        for part in pointer[2:].split("/"):
            node = node[part]
    return node


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    import schemathesis

    assert document["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.0 meta-schema
    assert all(result.ok() for result in schema.get_all_operations())


def test_every_registered_route_is_documented_with_its_methods_and_nothing_else(
    document: dict[str, Any], routes: dict[tuple[str, str], str]
) -> None:
    documented = {(path.removeprefix("/"), method) for path, method, _, _ in operations(document)}
    assert documented == set(routes), (
        f"registered but not documented: {sorted(set(routes) - documented)}; "
        f"documented but not registered: {sorted(documented - set(routes))}"
    )


def test_the_server_is_the_route_prefix(document: dict[str, Any]) -> None:
    host = json.loads((ROOT / "host.json").read_text())
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    assert document["servers"] == [{"url": f"/{prefix}"}]


def test_path_parameters_are_the_route_template_ones(document: dict[str, Any]) -> None:
    for path, method, item, operation in operations(document):
        parameters = [resolve(document, p) for p in item.get("parameters", []) + operation.get("parameters", [])]
        in_path = {p["name"] for p in parameters if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{(\w+)\}", path)), (method, path)
        assert all(p["required"] for p in parameters if p["in"] == "path")
        names = [(p["in"], p["name"].lower()) for p in parameters]
        assert len(names) == len(set(names)), (method, path)


def test_security_follows_each_route_auth_level(document: dict[str, Any], routes: dict[tuple[str, str], str]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["functionKey"] == {**schemes["functionKey"], "type": "apiKey", "in": "header"}
    assert schemes["functionKey"]["name"] == "x-functions-key"
    assert schemes["functionKeyQuery"] == {**schemes["functionKeyQuery"], "type": "apiKey", "in": "query"}
    assert schemes["functionKeyQuery"]["name"] == "code"
    for path, method, _, operation in operations(document):
        requirements = operation.get("security", document["security"])
        for requirement in requirements:
            assert set(requirement) <= set(schemes), (method, path)
        if routes[(path.removeprefix("/"), method)] == "anonymous":
            assert requirements == [] or {} in requirements, f"{method} {path} needs no key"
        else:
            assert requirements and all(set(r) & KEY_SCHEMES for r in requirements), f"{method} {path} needs a key"


def test_every_json_error_is_the_error_schema(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"] and set(error["properties"]) == {"error", "message"}
    assert error["additionalProperties"] is False
    for path, method, _, operation in operations(document):
        assert "200" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            content = resolve(document, response).get("content", {})
            assert content, (method, path, status)
            if int(status) >= 400 and "application/json" in content:
                assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_every_error_code_the_service_answers_is_listed(document: dict[str, Any]) -> None:
    listed = document["components"]["schemas"]["Error"]["properties"]["error"]["description"]

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    codes = {c.code for c in subclasses(errors.EgressError)} | {"method_not_allowed"}
    assert {code for code in codes if code not in listed} == set()


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(document, node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def test_the_function_serves_the_document_as_it_is_kept() -> None:
    from functions.openapi import openapi_document

    answer = openapi_document(func.HttpRequest("GET", "/api/openapi.json", body=b""))
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.get_body() == DOCUMENT.read_bytes()
