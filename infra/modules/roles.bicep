// The Function App identity's roles, each scoped to the one resource that needs it (a single queue
// where a queue is enough), never to the resource group or subscription: data-plane roles, and one
// custom management role on the SFTP account for its local users and firewall.
// tests/unit/test_infra.py checks this list against what the code does.
param principalId string
param stagingAccountName string
param releaseQueueName string
param blobTriggerPoisonQueueName string
param deliveryAccountName string
param sftpAccountName string
param hostAccountName string
param keyVaultName string
param communicationServiceName string
param appInsightsName string

// Built-in role definition IDs (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  communicationAndEmailServiceOwner: '09976791-48a7-449e-bb21-39d1a415f350'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource staging 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: stagingAccountName
}

resource stagingQueues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: staging
  name: 'default'
}

resource releaseQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: stagingQueues
  name: releaseQueueName
}

// The Functions host's name for the queue trigger's poison queue: '<queue>-poison'.
resource releasePoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: stagingQueues
  name: '${releaseQueueName}-poison'
}

resource blobTriggerPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: stagingQueues
  name: blobTriggerPoisonQueueName
}

resource delivery 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deliveryAccountName
}

resource sftp 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: sftpAccountName
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource communication 'Microsoft.Communication/communicationServices@2023-04-01' existing = {
  name: communicationServiceName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Staging: the blob trigger (Functions documents Blob Data Owner for an identity-based blob
// trigger connection; on an account without hierarchical namespace it adds nothing over
// Contributor but ACL management), reading and deleting staged files, audit and records.
resource stagingBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(staging.id, principalId, roles.storageBlobDataOwner)
  scope: staging
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// Staging queues: Queue Data Contributor, the only queue role the identity holds on this account,
// assigned on each of the three queues it uses rather than on the account or its queue service
// (which, for a queue role, would be the same as the whole account). Bicep scopes a role to a
// queue through an `existing` reference like any other resource, so nothing is gained by going
// wider. The release queue: the app sends to it (azure-storage-queue, by identity) and the queue
// trigger reads and deletes its messages. Its poison queue: the host moves a message there after
// 5 failed dequeues. The blob trigger's poison queue: the host puts a staging blob there after 5
// failures; it lives on the trigger connection's account (the blob extension's
// SharedBlobQueueListenerFactory), while its work queue is on host storage. Contributor, not
// Message Sender/Processor, because the trigger both reads and writes (moving to poison) and the
// host creates a poison queue if it is missing (here it is declared, so creation is a no-op).
resource releaseQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(releaseQueue.id, principalId, roles.storageQueueDataContributor)
  scope: releaseQueue
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource releasePoisonQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(releasePoisonQueue.id, principalId, roles.storageQueueDataContributor)
  scope: releasePoisonQueue
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource blobTriggerPoisonQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(blobTriggerPoisonQueue.id, principalId, roles.storageQueueDataContributor)
  scope: blobTriggerPoisonQueue
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

// Staging: the registry tables (packages, grants).
resource stagingTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(staging.id, principalId, roles.storageTableDataContributor)
  scope: staging
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

// Delivery: create, fill, lease and delete the egress containers. Stored access policies are
// written with the account key from Key Vault (Azure allows only Shared Key for them).
resource deliveryBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(delivery.id, principalId, roles.storageBlobDataContributor)
  scope: delivery
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// SFTP account: create the egress-<package_id> containers of sftp packages, write the encrypted
// files, delete them when retention ends. (Local users reach the files by their own permission
// scopes, not by any role.)
resource sftpBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(sftp.id, principalId, roles.storageBlobDataContributor)
  scope: sftp
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// SFTP account, management plane (shared/adapters/sftp_azure.py): the built-in role that covers
// local users is Storage Account Contributor (storageAccounts/*, which also lists the account keys);
// we know of no narrower one, so a custom role holds exactly the operations the adapter calls:
// - localusers read (get, list), write (create or update, with scopes and key), delete, and
//   regeneratePassword/action (the password Azure generates and the app emails). Not
//   localusers/listKeys/action: the app never reads a user's keys back.
// - storageAccounts/read and storageAccounts/write, for the firewall's IP rules: they are a
//   property of the account (networkAcls), and Azure has no narrower operation for them
//   (Microsoft.Storage's operations list has none for network rules). storageAccounts/write could
//   change any property of this one account; by itself it reads no data and no key, and the code
//   writes only networkAcls, everything in it but ipRules as it read it (each write is in the
//   activity log).
// Custom roles cannot be made assignable to a single resource (management group, subscription or
// resource group only): it is assignable in this resource group and assigned on the SFTP account
// alone. Role names are unique in the tenant, hence the suffix.
var sftpLocalUsersActions = [
  'Microsoft.Storage/storageAccounts/read'
  'Microsoft.Storage/storageAccounts/write'
  'Microsoft.Storage/storageAccounts/localusers/read'
  'Microsoft.Storage/storageAccounts/localusers/write'
  'Microsoft.Storage/storageAccounts/localUsers/delete'
  'Microsoft.Storage/storageAccounts/localusers/regeneratePassword/action'
]

resource sftpLocalUsersRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'Egress SFTP local users')
  properties: {
    roleName: 'Egress SFTP local users (${uniqueString(resourceGroup().id)})'
    description: 'The egress service: create, re-password and delete SFTP local users, and set the IP rules, of its SFTP storage account.'
    type: 'CustomRole'
    permissions: [
      {
        actions: sftpLocalUsersActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource sftpLocalUsers 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(sftp.id, principalId, sftpLocalUsersRole.id)
  scope: sftp
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: sftpLocalUsersRole.id
  }
}

// Host storage: the Functions host's keys, leases and deployment package (Flex Consumption
// requires Blob Data Owner on its deployment storage), and its queues.
resource hostBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource hostQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, principalId, roles.storageQueueDataContributor)
  scope: hostStorage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

// Key Vault: Secrets Officer, not Secrets User, because the function writes and deletes the
// per-package decryption keys of sftp/physical egress (shared/adapters/package_keys.py).
resource vaultSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

// Communication Services: sending email by managed identity.
resource emailSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(communication.id, principalId, roles.communicationAndEmailServiceOwner)
  scope: communication
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.communicationAndEmailServiceOwner)
  }
}

// Application Insights accepts telemetry only from Entra ID (local auth is off).
resource telemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}
