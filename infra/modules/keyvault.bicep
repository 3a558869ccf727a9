// Key Vault: the delivery account's key that signs links (SIGNING_KEY_SECRET_NAME) and the
// per-package age keys of sftp/physical egress (package-key-<id>, written and deleted by the
// function; a deleted key stays recoverable until Key Vault purges it: see the vault below).
// RBAC only, purge protection and soft delete, private endpoint only.
param location string
param tags object
param name string
param deliveryAccountName string
param signingKeySecretName string

@allowed([
  'key1'
  'key2'
])
param signingKeyName string
param workspaceId string
param privateEndpointSubnetId string
param vaultDnsZoneId string

// Package keys are deleted, not purged, and the audit trail says so. Purge protection stays on
// for this vault, and package keys get no vault of their own without it, by choice: it cannot be
// turned off on a vault that has it, nor can the retention below be changed; it keeps the signing
// key and every package key safe from a purge by a stolen identity; and checkov asks for it
// (CKV_AZURE_42, CKV_AZURE_110). The cost: when a package expires, the timer deletes its key and
// Key Vault keeps the deleted secret for softDeleteRetentionInDays. Until that secret's
// scheduledPurgeDate, anyone with secrets/recover on this vault (the function's Key Vault Secrets
// Officer role, a Key Vault Administrator) can recover it; on that date Key Vault purges it and
// it is gone for good. The function still asks for a purge (Secrets Officer holds secrets/*,
// purge included), which this vault refuses with a 403: the package then records
// key_soft_deleted with recoverable_until = scheduledPurgeDate, and key_destroyed only when a
// purge succeeded or no key was left (shared/adapters/package_keys.py, shared/services/sweep.py).
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    }
  }
}

resource delivery 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deliveryAccountName
}

// Written by the deployment (control plane), so no person needs a data-plane role to set it.
// Which key it holds is the signingKeyName parameter: rotation is README, Deploy.
resource signingKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: the secret is the storage account key itself; it is rotated by switching key1/key2 and regenerating the old key (README), and an expiry on the secret would stop link signing without rotating anything
  parent: vault
  name: signingKeySecretName
  properties: {
    contentType: 'storage-account-key;${signingKeyName}'
    value: signingKeyName == 'key1' ? delivery.listKeys().keys[0].value : delivery.listKeys().keys[1].value
  }
}

resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'vault-audit'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

module endpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}-vault'
  params: {
    location: location
    tags: tags
    name: 'pe-${name}-vault'
    subnetId: privateEndpointSubnetId
    targetId: vault.id
    groupId: 'vault'
    dnsZoneId: vaultDnsZoneId
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
