// The delivery account (DELIVERY_STORAGE): the sealed egress-<package_id> containers that
// recipients reach through their links. (sftp packages live in the SFTP account, storage-sftp.bicep.)
//
// It is reachable from the internet because recipients are outside the Safe Haven; what limits
// the network is the `sip` (allowed IP range) signed into every link, and what limits access is
// the link's stored access policy (read and list, one container, an expiry, revocable at once).
// Shared key stays enabled only because a service SAS bound to a stored access policy must be
// signed with the account key (user delegation SAS cannot use stored access policies, so they
// cannot be revoked at once). The key is kept in Key Vault; the function does everything else
// here by managed identity.
param location string
param tags object
param name string
param workspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: egressed outputs must not be copied to a second region (data residency); ZRS keeps three copies in the region
  // checkov:skip=CKV_AZURE_59: recipients outside the Safe Haven download from this account; each link is limited by its signed IP range (sip) and stored access policy
  // checkov:skip=CKV_AZURE_35: as above, the network is restricted per link by the signed IP range, not by the account firewall
  // checkov:skip=CKV2_AZURE_40: shared key signs the service SAS bound to stored access policies, the only SAS that can be revoked at once; the key lives in Key Vault
  // checkov:skip=CKV2_AZURE_33: recipients reach this account over the internet by design, so a private endpoint would not serve them
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: true
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
      }
    }
  }
}

// No soft delete and no versioning: when a package's retention ends its copy must be gone.
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  // checkov:skip=CKV2_AZURE_38: egressed data must be really gone when its retention ends; soft delete would keep it
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: false
    deleteRetentionPolicy: {
      enabled: false
    }
  }
}

// StorageRead is what shows each download through a link (caller IP, blob, time) in Azure.
resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
