// The SFTP account (SFTP_STORAGE, SFTP_ACCOUNT_ID): Azure Blob SFTP for sftp packages. Each package
// is sealed, encrypted, into its own container egress-<package_id>; each recipient logs in as a local
// user the app creates with read + list on that one container, and the app deletes the user when
// the grant is revoked or expires (DESIGN 4a). Its own account, apart from the delivery account,
// because SFTP needs a hierarchical namespace and because here shared key is off: nothing on this
// account is signed with a key.
//
// Network: recipients connect from the internet (port 22 on the blob endpoint), so public network
// access stays enabled, but the firewall denies by default and admits only the IP rules the app
// keeps equal to the ranges of the active sftp grants (shared/adapters/sftp_azure.py; the storage
// firewall is enforced for SFTP as for every other endpoint of the account). This template
// declares no IP rules: a redeploy empties them until the app's next reconciliation puts them back.
// The app writes the sealed files through a private endpoint from the service network, which the
// firewall does not filter, as for the staging and host accounts; the management calls (local
// users, IP rules) go to Azure Resource Manager, which the firewall does not filter either.
param location string
param tags object
param name string
param workspaceId string
param privateEndpointSubnetId string
param privateDnsZoneIds object

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: egressed outputs must not be copied to a second region (data residency); ZRS keeps three copies in the region
  // checkov:skip=CKV_AZURE_59: recipients outside the Safe Haven connect over the internet; the firewall denies by default and admits only the declared ranges of active grants
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    isHnsEnabled: true
    isSftpEnabled: true
    isLocalUserEnabled: true
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      // Kept by the app (allow_ranges), not here: see the header.
      ipRules: []
      virtualNetworkRules: []
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

// No soft delete: when a package's retention ends its copy must be gone.
resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: false
    }
    containerDeleteRetentionPolicy: {
      enabled: false
    }
  }
}

// StorageRead shows each SFTP download (the local user, the caller's address, the file, the time).
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

// The Function App writes the sealed files privately, from the service network.
module endpoint 'private-endpoint.bicep' = {
  name: 'pe-${name}-blob'
  params: {
    location: location
    tags: tags
    name: 'pe-${name}-blob'
    subnetId: privateEndpointSubnetId
    targetId: account.id
    groupId: 'blob'
    dnsZoneId: privateDnsZoneIds.blob
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
