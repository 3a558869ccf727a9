"""infra/ checked offline against the code and the README (there is no Bicep compiler here).

The Bicep is parsed with pycep (the parser checkov uses), so these tests read the same
structure a reviewer reads: which settings the Function App gets, which containers, tables and
roles exist, and how the accounts are locked down.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Platform settings the Functions host and Application Insights read, not our code.
PLATFORM_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
# Read by the Functions host for our bindings (identity-based connection parts), not by our code.
HOST_READ = {"AzureWebJobsStorage", "EGRESS_STORAGE__queueServiceUri"}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
}


@cache
def bicep(relative: str) -> dict[str, Any]:
    parsed: dict[str, Any] = BicepParser().parse(file_path=INFRA / relative)
    return parsed


def resource(relative: str, symbol: str) -> dict[str, Any]:
    config: dict[str, Any] = bicep(relative)["resources"][symbol]["config"]
    return config


def accessor(value: Any) -> str:
    """`a.b.c` for a property-accessor expression, so tests can compare references."""
    if isinstance(value, str):
        return value
    operands = value["operator"]["operands"]
    return f"{accessor(operands['operand_1'])}.{accessor(operands['operand_2'])}"


def main_var(name: str) -> Any:
    return bicep("main.bicep")["variables"][name]["value"]


def resolve(value: Any) -> Any:
    """A main.bicep value with `containers.x` and plain variables replaced by what they hold."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        path = accessor(value).split(".")
        if path[0] in bicep("main.bicep")["variables"]:
            found = main_var(path[0])
            for part in path[1:]:
                found = found[part]
            return found
    if isinstance(value, str) and value in bicep("main.bicep")["variables"]:
        return main_var(value)
    if isinstance(value, str) and value in bicep("main.bicep")["parameters"]:
        return bicep("main.bicep")["parameters"][value].get("default")  # None: given at deployment
    return value


def app_settings() -> dict[str, Any]:
    """Every app setting the Function App gets: main.bicep's, then the module's platform ones."""
    from_main = bicep("main.bicep")["modules"]["functionApp"]["config"]["params"]["appSettings"]
    union = resource("modules/functionapp.bicep", "settings")["properties"]["function"]
    assert union["type"] == "union" and union["parameters"]["arg_1"] == "appSettings"
    return {**from_main, **union["parameters"]["arg_2"]}


def settings_the_code_reads() -> set[str]:
    names = {info.alias for info in Settings.model_fields.values() if info.alias}
    sources = [*(ROOT / "functions").glob("*.py"), ROOT / "shared" / "settings.py"]
    for source in sources:
        text = source.read_text()
        names |= set(re.findall(r"%([A-Za-z0-9_]+)%", text))  # binding expressions the host resolves
        names |= set(re.findall(r'connection="([A-Za-z0-9_]+)"', text))
        names |= set(re.findall(r'os\.environ\.get\("([A-Za-z0-9_]+)"', text))
    names.add("LOCAL_FUNCTION_KEY")  # read by the local host (devhost/host.py)
    return names


def readme_settings() -> dict[str, str]:
    """Setting name -> its README row, from the Settings table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([A-Za-z0-9_]+)`", cells[0]):
            rows[name] = line
    return rows


def azure_column(row: str) -> str:
    return row.strip().strip("|").split("|")[3].strip()


def test_every_setting_the_code_reads_is_in_the_readme() -> None:
    rows = readme_settings()
    for name in settings_the_code_reads():
        base = name.split("__")[0]
        assert base in rows, f"{name} is read by the code but missing from the README's settings table"
        if "__" in name:
            assert f"`{name}`" in rows[base], f"{name} should be named in the README row of {base}"


def test_every_readme_setting_is_set_by_the_bicep_or_says_why_not() -> None:
    azure = app_settings()
    for name, row in readme_settings().items():
        in_azure = name in azure or any(key.startswith(f"{name}__") for key in azure)
        says_not_set = azure_column(row).startswith("not set:")
        assert in_azure != says_not_set, (
            f"{name}: the Bicep {'sets' if in_azure else 'does not set'} it, "
            f"but the README's Azure column says {azure_column(row)!r}"
        )


def test_the_bicep_sets_nothing_unknown() -> None:
    known = settings_the_code_reads() | PLATFORM_SETTINGS | HOST_READ
    rows = readme_settings()
    for name in app_settings():
        if "__" in name:
            base = name.split("__")[0]
            assert base in rows and f"`{name}`" in rows[base], f"{name} is set in Azure but not documented"
        else:
            assert name in known, f"{name} is set in the Bicep but nothing reads it"


def test_azure_values_are_the_safe_ones_and_valid() -> None:
    azure = app_settings()
    assert azure["BLOB_TRIGGER_SOURCE"] == "EventGrid"
    assert azure["REQUIRE_MANAGER_PRINCIPAL"] == "true"
    assert azure["SAS_ALLOW_HTTP"] == "false"
    assert azure["EMAIL_BACKEND"] == "acs"
    assert "ACS_CONNECTION_STRING" not in azure and "DELIVERY_STORAGE" not in azure
    app_role = json.loads((INFRA / "manager-app.json").read_text())[0]["value"]
    assert azure["MANAGER_ROLE"] == app_role
    # Every literal value must pass the settings' own validation.
    literal = {k: resolve(v) for k, v in azure.items() if k not in PLATFORM_SETTINGS}
    literal = {k: v for k, v in literal.items() if isinstance(v, str) and "${" not in v and "." not in k}
    assert literal["RETENTION_HOURS"] == "168"  # a parameter's default, resolved
    Settings(**literal)


def test_containers_and_tables_the_code_needs_are_declared() -> None:
    azure = app_settings()
    staging_params = bicep("main.bicep")["modules"]["staging"]["config"]["params"]
    for setting, param in (
        ("STAGING_CONTAINER", "stagingContainer"),
        ("AUDIT_CONTAINER", "auditContainer"),
        ("RECORDS_CONTAINER", "recordsContainer"),
    ):
        assert resolve(azure[setting]) == resolve(staging_params[param]), setting
        declared = {
            cfg["config"]["name"]
            for cfg in bicep("modules/storage-staging.bicep")["resources"].values()
            if cfg["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"
        }
        assert param in declared, f"storage-staging.bicep declares no container named by {param}"
    delivery_params = bicep("main.bicep")["modules"]["delivery"]["config"]["params"]
    assert resolve(azure["SFTP_CONTAINER"]) == resolve(delivery_params["sftpContainer"])

    prefix = resolve(azure["REGISTRY_TABLE_PREFIX"])
    assert resolve(staging_params["registryTablePrefix"]) == prefix
    tables = {
        cfg["config"]["name"]
        for cfg in bicep("modules/storage-staging.bicep")["resources"].values()
        if cfg["type"] == "Microsoft.Storage/storageAccounts/tableServices/tables"
    }
    # shared/adapters/table_registry.py names them f"{prefix}packages" and f"{prefix}grants"
    registry_source = (ROOT / "shared" / "adapters" / "table_registry.py").read_text()
    for suffix in ("packages", "grants"):
        assert f'f"{{prefix}}{suffix}"' in registry_source
        assert f"${{registryTablePrefix}}{suffix}" in tables


def role_assignments() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for cfg in bicep("modules/roles.bicep")["resources"].values():
        if cfg["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        props = cfg["config"]["properties"]
        role = accessor(props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]).split(".")[1]
        found[(cfg["config"]["scope"], role)] = props
    return found


def test_the_function_identity_has_exactly_the_roles_it_needs() -> None:
    writes_package_keys = "set_secret" in (ROOT / "shared" / "adapters" / "package_keys.py").read_text()
    vault_role = "keyVaultSecretsOfficer" if writes_package_keys else "keyVaultSecretsUser"
    expected = {
        ("staging", "storageBlobDataOwner"),  # blob trigger connection (documented requirement)
        ("staging", "storageQueueDataContributor"),  # the blob trigger's poison queue
        ("staging", "storageTableDataContributor"),  # registry
        ("delivery", "storageBlobDataContributor"),  # egress containers
        ("hostStorage", "storageBlobDataOwner"),  # host keys, leases, deployment package
        ("hostStorage", "storageQueueDataContributor"),
        ("vault", vault_role),
        ("communication", "communicationAndEmailServiceOwner"),
        ("appInsights", "monitoringMetricsPublisher"),
    }
    assignments = role_assignments()
    assert set(assignments) == expected
    roles = bicep("modules/roles.bicep")["variables"]["roles"]["value"]
    for (_scope, role), props in assignments.items():
        assert props["principalType"] == "ServicePrincipal"
        assert roles[role] not in BROAD_ROLES, f"{role} is {BROAD_ROLES.get(roles[role])}"
    resources = bicep("modules/roles.bicep")["resources"]
    scopes = {cfg["config"]["scope"] for cfg in resources.values() if "scope" in cfg["config"]}
    existing = {symbol for symbol, cfg in resources.items() if cfg["existing"]}
    assert scopes <= existing, "every role is scoped to one resource, never the group or subscription"


def account(module: str) -> dict[str, Any]:
    return resource(module, "account")["properties"]


def test_storage_accounts_are_locked_down_as_documented() -> None:
    for module in ("storage-staging.bicep", "storage-delivery.bicep", "storage-host.bicep"):
        props = account(f"modules/{module}")
        assert props["supportsHttpsTrafficOnly"] is True, module
        assert props["minimumTlsVersion"] == "TLS1_2", module
        assert props["allowBlobPublicAccess"] is False, module
    for module in ("storage-staging.bicep", "storage-host.bicep"):
        props = account(f"modules/{module}")
        assert props["allowSharedKeyAccess"] is False, module
        assert props["publicNetworkAccess"] == "Disabled", module
    # Shared key only where the service SAS with stored access policies needs it.
    assert account("modules/storage-delivery.bicep")["allowSharedKeyAccess"] is True


def test_audit_trail_is_versioned_and_immutable_but_appendable() -> None:
    module = "modules/storage-staging.bicep"
    assert resource(module, "blobService")["properties"]["isVersioningEnabled"] is True
    policy = resource(module, "auditImmutability")
    assert policy["parent"] == "audit"
    assert policy["properties"]["immutabilityPeriodSinceCreationInDays"] == "auditRetentionDays"
    # The audit trail is one append blob per package (shared/adapters/audit_log.py).
    assert "append_block" in (ROOT / "shared" / "adapters" / "audit_log.py").read_text()
    assert policy["properties"]["allowProtectedAppendWrites"] is True


def test_key_vault_is_rbac_with_purge_protection() -> None:
    props = resource("modules/keyvault.bicep", "vault")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert props["publicNetworkAccess"] == "Disabled"
    assert bicep("main.bicep")["variables"]["signingKeySecretName"]["value"] == Settings().signing_key_secret_name


def test_function_app_is_flex_python_311_with_identity_and_sign_in() -> None:
    module = "modules/functionapp.bicep"
    assert resource(module, "plan")["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    app = resource(module, "app")
    assert app["identity"]["type"] == "SystemAssigned"
    assert app["properties"]["httpsOnly"] is True
    assert app["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    auth = resource(module, "auth")["properties"]
    assert auth["globalValidation"]["requireAuthentication"] is True
    assert auth["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    # Event Grid calls the blob extension webhook with its key, not an Entra ID token.
    assert set(auth["globalValidation"]["excludedPaths"]) == {"/api/health", "/runtime/webhooks/blobs"}


def test_event_grid_feeds_the_blob_trigger_only_manifests_in_staging() -> None:
    template = bicep("eventgrid-subscription.bicep")
    trigger_source = (ROOT / "functions" / "staging_trigger.py").read_text()
    function_name = re.search(r'function_name\("([a-z_]+)"\)', trigger_source)
    assert function_name and template["parameters"]["functionName"]["default"] == function_name.group(1)
    assert 'path="%STAGING_CONTAINER%/{package_id}/manifest.json"' in trigger_source
    subscription = template["resources"]["subscription"]["config"]["properties"]
    assert subscription["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert subscription["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/${stagingContainer}/blobs/"
    assert subscription["filter"]["subjectEndsWith"] == "/manifest.json"
    hook = (INFRA / "hooks" / "postdeploy.sh").read_text()
    for output in ("FUNCTION_APP_NAME", "STAGING_SYSTEM_TOPIC_NAME", "STAGING_CONTAINER", "AZURE_RESOURCE_GROUP"):
        assert f"${output}" in hook
        assert output in bicep("main.bicep")["outputs"], f"main.bicep must output {output} for the hook"


@pytest.mark.parametrize("module", sorted(p.name for p in (INFRA / "modules").glob("*.bicep")))
def test_every_module_is_used_and_parses(module: str) -> None:
    used = json.dumps(bicep("main.bicep")) + "".join(
        json.dumps(bicep(f"modules/{m.name}")) for m in (INFRA / "modules").glob("*.bicep")
    )
    assert f"{module}" in used, f"{module} is not deployed by main.bicep or another module"


def test_every_checkov_suppression_gives_a_reason() -> None:
    for path in INFRA.rglob("*.bicep"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                reason = line.split("checkov:skip=", 1)[1].split(":", 1)
                assert len(reason) == 2 and len(reason[1].strip()) > 20, f"{path.name}: {line.strip()}"
