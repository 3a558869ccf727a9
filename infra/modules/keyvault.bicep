// Key Vault: the delivery account's key that signs links (SIGNING_KEY_SECRET_NAME) and the
// per-package age keys of sftp/physical egress (package-key-<id>, written and deleted by the
// function). RBAC only, purge protection and soft delete, private endpoint only.
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
