// The staging account (EGRESS_STORAGE): staging container, registry tables, audit trail,
// manifest records and the release queue. It sits inside the Safe Haven's network: no public
// network access (private endpoints only), no shared key (Entra ID only), HTTPS and TLS 1.2, no
// anonymous access.
param location string
param tags object
param name string
param stagingContainer string
param auditContainer string
param recordsContainer string
param registryTablePrefix string
@description('Queue the app sends signed-off packages to (RELEASE_QUEUE) and the queue trigger reads.')
param releaseQueueName string
@description('Queue the Functions host moves a staging blob that keeps failing to (on this account).')
param blobTriggerPoisonQueueName string
param auditRetentionDays int
param workspaceId string
param privateEndpointSubnetId string
param privateDnsZoneIds object

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: research outputs must not be copied to a second region (data residency of the Safe Haven); ZRS keeps three copies within the region
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
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    }
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Versioning keeps every state of the audit trail's blobs; soft delete guards mistakes.
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource staging 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: stagingContainer
  properties: {
    publicAccess: 'None'
  }
}

resource records 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: recordsContainer
  properties: {
    publicAccess: 'None'
  }
}

resource audit 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: auditContainer
  properties: {
    publicAccess: 'None'
  }
}

// Write once: blobs in the audit container cannot be changed or deleted for auditRetentionDays.
// Protected append writes let the service add events to a package's append blob and nothing
// else. Lock the policy once reviewed (README, Deploy): a locked policy cannot be shortened.
resource auditImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: audit
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditRetentionDays
    allowProtectedAppendWrites: true
  }
}

// Old versions of staged files (from a re-staged package) go after a week; staged files
// themselves are deleted by the service once a package is sealed.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'staging-old-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${stagingContainer}/'
              ]
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: 7
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource packagesTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: '${registryTablePrefix}packages'
}

resource grantsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: '${registryTablePrefix}grants'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// Release after sign-off runs from a queue so no large package is copied inside an HTTP request.
// The Functions host moves a message that failed 5 dequeues to '<queue>-poison' on the same
// account, and a staging blob that failed 5 times to 'webjobs-blobtrigger-poison' there. All three
// are declared here, not left to the host to create, because the function's queue role is scoped
// to each queue (roles.bicep) and a role can only be assigned on a queue that exists.
resource releaseQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: releaseQueueName
}

resource releasePoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${releaseQueueName}-poison'
}

resource blobTriggerPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: blobTriggerPoisonQueueName
}

// Who read, wrote or deleted what: staging uploads, registry changes, audit appends.
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

resource tableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: [
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

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'storage-logs'
  scope: queueService
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

// The Function App reaches blobs, tables and queues (release, and the poison queues) privately.
module endpoints 'private-endpoint.bicep' = [for service in [
  'blob'
  'queue'
  'table'
]: {
  name: 'pe-${name}-${service}'
  params: {
    location: location
    tags: tags
    name: 'pe-${name}-${service}'
    subnetId: privateEndpointSubnetId
    targetId: account.id
    groupId: service
    dnsZoneId: privateDnsZoneIds[service]
  }
}]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
