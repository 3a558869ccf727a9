"""infra/ checked offline against the code and the README (there is no Bicep compiler here).

The Bicep is parsed with pycep (the parser checkov uses), so these tests read the same
structure a reviewer reads: which settings the Function App gets, which containers, tables and
roles exist, and how the accounts are locked down.
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatch
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
# Built-in queue roles (ids are the same in every tenant): the identity may hold only Contributor.
QUEUE_ROLES = {
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "19e7f393-937e-4f77-808e-94535e297925": "Storage Queue Data Reader",
    "8a0f0c08-91a1-4084-bc3d-661d67233fed": "Storage Queue Data Message Processor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
}
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


def default_of(alias: str) -> Any:
    return next(info.default for info in Settings.model_fields.values() if info.alias == alias)


def test_sign_off_and_release_settings_are_set_for_azure() -> None:
    azure = app_settings()
    # DESIGN 3a: always "required" in Azure, and the signed-in principal must be the named person.
    assert azure["CLASSIFICATION_SIGNOFF"] == "required"
    assert azure["SIGNOFF_REQUIRE_PRINCIPAL"] == "true"
    assert resolve(azure["SIGNOFF_TTL_HOURS"]) == "168"  # a parameter's default, resolved
    assert float(resolve(azure["SIGNOFF_TTL_HOURS"])) == default_of("SIGNOFF_TTL_HOURS")
    assert resolve(azure["RELEASE_QUEUE"]) == default_of("RELEASE_QUEUE") == "egress-release"
    # Links point at the app itself: its default host name, the same URL main.bicep outputs.
    module = "modules/functionapp.bicep"
    assert resource(module, "settings")["parent"] == "app"
    assert azure["PUBLIC_BASE_URL"] == "https://${app.properties.defaultHostName}"
    assert bicep(module)["outputs"]["url"]["value"] == azure["PUBLIC_BASE_URL"]
    # The queue trigger and the sender reach the staging account's queues by identity.
    assert accessor(azure["EGRESS_STORAGE__queueServiceUri"]) == "staging.outputs.queueEndpoint"
    endpoint = bicep("modules/storage-staging.bicep")["outputs"]["queueEndpoint"]["value"]
    assert accessor(endpoint) == "account.properties.primaryEndpoints.queue"


def staging_queues() -> dict[str, str]:
    """Queue name in storage-staging.bicep (in terms of its parameters) -> the resource's symbol."""
    found = {}
    for symbol, cfg in bicep("modules/storage-staging.bicep")["resources"].items():
        if cfg["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues":
            assert cfg["config"]["parent"] == "queueService"
            found[cfg["config"]["name"]] = symbol
    return found


def test_release_queue_and_poison_queues_are_declared_on_staging() -> None:
    azure = app_settings()
    params = bicep("main.bicep")["modules"]["staging"]["config"]["params"]
    assert resolve(params["releaseQueueName"]) == resolve(azure["RELEASE_QUEUE"])
    # The Functions blob extension's fixed name for a staging blob that keeps failing.
    assert resolve(params["blobTriggerPoisonQueueName"]) == "webjobs-blobtrigger-poison"
    # The release queue, the Functions host's '<queue>-poison' for it, and the blob trigger's.
    assert set(staging_queues()) == {
        "releaseQueueName",
        "${releaseQueueName}-poison",
        "blobTriggerPoisonQueueName",
    }
    # Queues go through the service network like blobs and tables (the account is private).
    endpoints = bicep("modules/storage-staging.bicep")["modules"]["endpoints"]
    assert "queue" in json.dumps(endpoints)
    assert "privatelink.queue." in json.dumps(bicep("modules/network.bicep")["variables"]["zones"])


def test_the_queue_trigger_reads_the_declared_release_queue() -> None:
    triggers = []
    for source in (ROOT / "functions").glob("*.py"):
        triggers += re.findall(r"queue_trigger\((.*?)\)", source.read_text(), flags=re.S)
    assert triggers, "no queue-triggered function in functions/ (DESIGN 3a: release after sign-off)"
    for arguments in triggers:
        assert 'queue_name="%RELEASE_QUEUE%"' in arguments, arguments
        assert 'connection="EGRESS_STORAGE"' in arguments, arguments


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
    """(scope, role) -> the assignment's properties; a built-in role by its key in `roles`, a custom
    one by the symbol of its role definition in roles.bicep."""
    found = {}
    for cfg in bicep("modules/roles.bicep")["resources"].values():
        if cfg["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        props = cfg["config"]["properties"]
        definition = props["roleDefinitionId"]
        if "function" in definition:
            role = accessor(definition["function"]["parameters"]["resource_name_1"]).split(".")[1]
        else:
            symbol, attribute = accessor(definition).split(".")
            assert attribute == "id" and roles_resource(symbol)["type"] == "Microsoft.Authorization/roleDefinitions"
            role = symbol
        found[(cfg["config"]["scope"], role)] = props
    return found


def roles_resource(symbol: str) -> dict[str, Any]:
    found: dict[str, Any] = bicep("modules/roles.bicep")["resources"][symbol]
    return found


def test_the_function_identity_has_exactly_the_roles_it_needs() -> None:
    writes_package_keys = "set_secret" in (ROOT / "shared" / "adapters" / "package_keys.py").read_text()
    vault_role = "keyVaultSecretsOfficer" if writes_package_keys else "keyVaultSecretsUser"
    expected = {
        ("staging", "storageBlobDataOwner"),  # blob trigger connection (documented requirement)
        ("releaseQueue", "storageQueueDataContributor"),  # send, and the queue trigger
        ("releasePoisonQueue", "storageQueueDataContributor"),  # the queue trigger's poison queue
        ("blobTriggerPoisonQueue", "storageQueueDataContributor"),  # the blob trigger's poison queue
        ("staging", "storageTableDataContributor"),  # registry
        ("delivery", "storageBlobDataContributor"),  # egress containers
        ("sftp", "storageBlobDataContributor"),  # sftp packages' containers
        ("sftp", "sftpLocalUsersRole"),  # SFTP local users and IP rules (custom, management plane)
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
        assert roles.get(role) not in BROAD_ROLES, f"{role} is {BROAD_ROLES.get(roles[role])}"
    resources = bicep("modules/roles.bicep")["resources"]
    scopes = {cfg["config"]["scope"] for cfg in resources.values() if "scope" in cfg["config"]}
    existing = {symbol for symbol, cfg in resources.items() if cfg["existing"]}
    assert scopes <= existing, "every role is scoped to one resource, never the group or subscription"


def roles_parent_chain(symbol: str) -> list[str]:
    """`symbol`, its parent, its parent's parent... as roles.bicep declares them."""
    resources = bicep("modules/roles.bicep")["resources"]
    chain = [symbol]
    while "parent" in resources[chain[-1]]["config"]:
        chain.append(resources[chain[-1]]["config"]["parent"])
    return chain


def test_the_identity_holds_one_queue_role_on_staging_each_queue_by_itself() -> None:
    roles = bicep("modules/roles.bicep")["variables"]["roles"]["value"]
    assert roles["storageQueueDataContributor"] == "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
    # No other queue role is even defined, so none can be assigned.
    assert {rid for rid in roles.values() if rid in QUEUE_ROLES} == {roles["storageQueueDataContributor"]}
    resources = bicep("modules/roles.bicep")["resources"]
    on_staging = {(scope, role) for scope, role in role_assignments() if roles_parent_chain(scope)[-1] == "staging"}
    queue_roles = {(scope, role) for scope, role in on_staging if roles[role] in QUEUE_ROLES}
    assert {role for _scope, role in queue_roles} == {"storageQueueDataContributor"}
    # Each on one queue, never on the account or its queue service ...
    for scope, _role in queue_roles:
        assert resources[scope]["type"] == "Microsoft.Storage/storageAccounts/queueServices/queues", scope
        assert resources[scope]["existing"] is True
    # ... and exactly on the queues storage-staging.bicep declares, named from the same values.
    assert {resources[scope]["config"]["name"] for scope, _role in queue_roles} == set(staging_queues())
    main_modules = bicep("main.bicep")["modules"]
    for param in ("releaseQueueName", "blobTriggerPoisonQueueName"):
        assert resolve(main_modules["roles"]["config"]["params"][param]) == resolve(
            main_modules["staging"]["config"]["params"][param]
        ), param


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
    # A browser without a session goes to the Entra ID sign-in (the sign-off page); a request
    # with a bearer token is unaffected.
    assert auth["globalValidation"]["unauthenticatedClientAction"] == "RedirectToLoginPage"
    # Event Grid calls the blob extension webhook with its key, not an Entra ID token.
    assert set(auth["globalValidation"]["excludedPaths"]) == {"/api/health", "/runtime/webhooks/blobs"}


@pytest.mark.parametrize("path", ["/api/signoff/abc123", "/api/signoff/abc123/", "/api/packages/p1"])
def test_sign_off_and_manager_routes_are_not_excluded_from_sign_in(path: str) -> None:
    validation = resource("modules/functionapp.bicep", "auth")["properties"]["globalValidation"]
    assert validation["requireAuthentication"] is True
    for excluded in validation["excludedPaths"]:
        assert not fnmatch(path, excluded), f"{excluded} takes {path} out of App Service authentication"
        assert not path.startswith(excluded.rstrip("*")), f"{excluded} takes {path} out of App Service authentication"


def test_any_signed_in_user_of_the_tenant_reaches_the_sign_off_page() -> None:
    """Classifiers hold no app role: sign-in must not be limited to role holders or named principals.

    The manager API keeps its role check in the code (REQUIRE_MANAGER_PRINCIPAL, MANAGER_ROLE).
    """
    auth = resource("modules/functionapp.bicep", "auth")["properties"]
    assert "defaultAuthorizationPolicy" not in auth["identityProviders"]["azureActiveDirectory"]
    assert set(auth["identityProviders"]["azureActiveDirectory"]["validation"]) == {"allowedAudiences"}
    assert "allowedPrincipals" not in json.dumps(auth) and "jwtClaimChecks" not in json.dumps(auth)
    azure = app_settings()
    assert azure["REQUIRE_MANAGER_PRINCIPAL"] == "true" and azure["MANAGER_ROLE"] == "EgressManager"
    # The hook warns when the app registration would refuse classifiers a token.
    hook = (INFRA / "hooks" / "postdeploy.sh").read_text()
    assert "appRoleAssignmentRequired" in hook and "$EGRESS_API_CLIENT_ID" in hook
    assert "FUNCTION_APP_URL" in bicep("main.bicep")["outputs"]


def test_the_readme_does_not_require_app_role_assignment() -> None:
    """With assignment required Entra ID gives no token to a classifier, who holds no app role."""
    assert "appRoleAssignmentRequired=true" not in (ROOT / "README.md").read_text()


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


# The SFTP account (DESIGN 4a; shared/adapters/sftp_azure.py)

# Exactly what shared/adapters/sftp_azure.py calls through azure-mgmt-storage, and nothing else.
SFTP_ROLE_ACTIONS = {
    "microsoft.storage/storageaccounts/read": "get_properties: read the firewall",
    "microsoft.storage/storageaccounts/write": "update: the firewall's IP rules (no narrower operation exists)",
    "microsoft.storage/storageaccounts/localusers/read": "local_users.list",
    "microsoft.storage/storageaccounts/localusers/write": "local_users.create_or_update",
    "microsoft.storage/storageaccounts/localusers/delete": "local_users.delete",
    "microsoft.storage/storageaccounts/localusers/regeneratepassword/action": "local_users.regenerate_password",
}


def test_the_sftp_account_has_sftp_on_and_shared_key_and_public_blobs_off() -> None:
    props = account("modules/storage-sftp.bicep")
    assert resource("modules/storage-sftp.bicep", "account")["kind"] == "StorageV2"
    assert props["isHnsEnabled"] is True and props["isSftpEnabled"] is True and props["isLocalUserEnabled"] is True
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    # Recipients come from the internet, but only through the firewall the app keeps.
    assert props["publicNetworkAccess"] == "Enabled"
    assert props["networkAcls"] == {
        "defaultAction": "Deny",
        "bypass": "AzureServices",
        "ipRules": [],
        "virtualNetworkRules": [],
    }


def test_the_app_writes_to_the_sftp_account_privately_and_its_reads_are_logged() -> None:
    module = bicep("modules/storage-sftp.bicep")
    endpoint = module["modules"]["endpoint"]
    assert endpoint["detail"]["path"] == "private-endpoint.bicep"
    params = endpoint["config"]["params"]
    assert params["groupId"] == "blob" and accessor(params["targetId"]) == "account.id"
    assert accessor(params["dnsZoneId"]) == "privateDnsZoneIds.blob"
    logs = resource("modules/storage-sftp.bicep", "blobLogs")
    assert logs["scope"] == "blobService" and logs["properties"]["workspaceId"] == "workspaceId"
    assert {log["category"] for log in logs["properties"]["logs"] if log["enabled"]} == {
        "StorageRead",
        "StorageWrite",
        "StorageDelete",
    }
    main = bicep("main.bicep")["modules"]["sftp"]["config"]["params"]
    assert accessor(main["workspaceId"]) == "monitoring.outputs.workspaceId"
    assert accessor(main["privateEndpointSubnetId"]) == "network.outputs.privateEndpointSubnetId"


def test_the_sftp_role_holds_exactly_the_operations_the_adapter_calls_on_that_one_account() -> None:
    definition = roles_resource("sftpLocalUsersRole")
    assert definition["type"] == "Microsoft.Authorization/roleDefinitions"
    props = definition["config"]["properties"]
    assert props["type"] == "CustomRole"
    assert props["roleName"].startswith("Egress SFTP local users")
    (permissions,) = props["permissions"]
    actions = bicep("modules/roles.bicep")["variables"][permissions["actions"]]["value"]
    assert {a.lower() for a in actions} == set(SFTP_ROLE_ACTIONS)
    assert len(actions) == len(SFTP_ROLE_ACTIONS)
    assert not any("*" in a for a in actions)
    assert permissions["notActions"] == [] and permissions["dataActions"] == [] and permissions["notDataActions"] == []
    # Assignable in the service's resource group (custom roles cannot be assignable to one
    # resource), assigned on the SFTP account only.
    (scope,) = props["assignableScopes"]
    assert scope["function"]["type"] == "resource_group" and scope["function"]["property_name"] == "id"
    on_sftp = {role for (scope, role) in role_assignments() if scope == "sftp"}
    assert on_sftp == {"storageBlobDataContributor", "sftpLocalUsersRole"}
    assert [scope for (scope, role) in role_assignments() if role == "sftpLocalUsersRole"] == ["sftp"]
    sftp = roles_resource("sftp")
    assert sftp["existing"] is True and sftp["type"] == "Microsoft.Storage/storageAccounts"
    params = bicep("main.bicep")["modules"]["roles"]["config"]["params"]
    assert accessor(params["sftpAccountName"]) == "sftp.outputs.name"
    # The role the adapter names when Azure refuses it.
    adapter = (ROOT / "shared" / "adapters" / "sftp_azure.py").read_text()
    assert 'ROLE_NAME = "Egress SFTP local users"' in adapter
    for call in ("get_properties", "storage_accounts.update", "create_or_update", "regenerate_password"):
        assert call in adapter
    assert "list_keys" not in adapter, "listing a local user's keys would need localusers/listKeys/action"


def test_the_app_is_told_where_the_sftp_account_is() -> None:
    azure = app_settings()
    assert accessor(azure["SFTP_STORAGE__blobServiceUri"]) == "sftp.outputs.blobEndpoint"
    assert accessor(azure["SFTP_ACCOUNT_ID"]) == "sftp.outputs.id"
    host = azure["SFTP_HOST"]["operator"]["operands"]
    assert host["true_value"] == "${sftp.outputs.name}.blob.${environment().suffixes.storage}"
    assert host["false_value"] == "sftpHost"
    assert bicep("modules/storage-sftp.bicep")["outputs"]["id"]["value"] == {
        "operator": {"type": "property_accessor", "operands": {"operand_1": "account", "operand_2": "id"}}
    }
    # The old shared SFTP container and username are gone.
    for old in ("SFTP_CONTAINER", "SFTP_USERNAME"):
        assert old not in azure
    assert "sftp" not in main_var("containers")
    assert "sftpUsername" not in bicep("main.bicep")["parameters"]
    assert "sftpContainer" not in bicep("modules/storage-delivery.bicep")["parameters"]


def test_azd_passes_only_parameters_main_bicep_declares() -> None:
    """A parameter file naming a removed parameter (such as the old sftpUsername) fails the deployment."""
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = bicep("main.bicep")["parameters"]
    assert set(given) <= set(declared), set(given) - set(declared)
