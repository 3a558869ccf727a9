// Data egress service for a Data Safe Haven: everything `azd up` deploys.
// One module per resource; each module's header says what it is for and why it is set as it is.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the azd environment: names the resource group and tags every resource.')
param environmentName string

@minLength(1)
@description('Azure region for every resource; it must offer Flex Consumption.')
param location string

@description('Email address of the system manager (grants, rejections, revocations, expiries).')
param systemManagerEmail string

@description('Client ID of the Entra ID app registration that protects the HTTP API and defines the EgressManager app role (README, Deploy).')
param apiClientId string

@description('Resource ID of the research environment subnet the classification team stages from; empty = add later.')
param researchSubnetId string = ''

@allowed([
  'key1'
  'key2'
])
@description('Which delivery account key signs the links (README, Rotating the signing key).')
param signingKeyName string = 'key1'

@description('Where Azure Communication Services keeps email data at rest.')
param emailDataLocation string = 'UK'

@minValue(1)
@description('Days the audit trail cannot be changed or deleted (time-based retention on its container).')
param auditRetentionDays int = 2557

@description('Hours the egressed copy is kept after the last grant of a package ended.')
param retentionHours string = '168'

@description('Hours a sign-off link lives; sign-off not complete by then rejects the package (DESIGN 3a).')
param signoffTtlHours string = '168'

@description('SFTP server address given to sftp recipients (a DNS name pointing at the SFTP account); empty = its blob endpoint, where Azure serves SFTP.')
param sftpHost string = ''

@description('Address space of the service virtual network, and its two subnets inside it.')
param vnetAddressPrefix string = '10.40.0.0/16'
param functionsSubnetPrefix string = '10.40.1.0/24'
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'dsh-egress'
}
// The names the code uses (shared/settings.py defaults); tests/unit/test_infra.py checks they agree.
var containers = {
  staging: 'egress-staging'
  audit: 'egress-audit'
  records: 'egress-records'
  deployment: 'app-package'
}
var registryTablePrefix = 'egress'
// Queues on the staging account: the release queue (RELEASE_QUEUE; its poison queue is
// '<name>-poison', the Functions host's rule) and the blob trigger's poison queue, whose name the
// Functions blob extension fixes. Declared so that the function's queue role can name each one.
var queues = {
  release: 'egress-release'
  blobTriggerPoison: 'webjobs-blobtrigger-poison'
}
// ARM still evaluates a skipped module's scope, so these must not index an empty subnet ID.
var researchSubscriptionId = empty(researchSubnetId) ? subscription().subscriptionId : split(researchSubnetId, '/')[2]
var researchResourceGroup = empty(researchSubnetId) ? 'rg-${environmentName}' : split(researchSubnetId, '/')[4]
var signingKeySecretName = 'delivery-storage-key'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: 'log-${token}'
    appInsightsName: 'appi-${token}'
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'vnet-${token}'
    addressPrefix: vnetAddressPrefix
    functionsSubnetPrefix: functionsSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
  }
}

module staging 'modules/storage-staging.bicep' = {
  name: 'storage-staging'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'stg${token}'
    stagingContainer: containers.staging
    auditContainer: containers.audit
    recordsContainer: containers.records
    registryTablePrefix: registryTablePrefix
    releaseQueueName: queues.release
    blobTriggerPoisonQueueName: queues.blobTriggerPoison
    auditRetentionDays: auditRetentionDays
    workspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneIds: network.outputs.privateDnsZoneIds
  }
}

module researchAccess 'modules/research-access.bicep' = if (!empty(researchSubnetId)) {
  name: 'research-access'
  scope: resourceGroup(researchSubscriptionId, researchResourceGroup)
  params: {
    location: location
    tags: tags
    subnetId: researchSubnetId
    stagingAccountId: staging.outputs.id
    blobDnsZoneId: network.outputs.privateDnsZoneIds.blob
  }
}

module delivery 'modules/storage-delivery.bicep' = {
  name: 'storage-delivery'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'dlv${token}'
    workspaceId: monitoring.outputs.workspaceId
  }
}

// sftp packages: sealed into this account's containers, served to recipients by Azure Blob SFTP
// as local users the app creates and deletes (DESIGN 4a).
module sftp 'modules/storage-sftp.bicep' = {
  name: 'storage-sftp'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'sftp${token}'
    workspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneIds: network.outputs.privateDnsZoneIds
  }
}

module hostStorage 'modules/storage-host.bicep' = {
  name: 'storage-host'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'fn${token}'
    deploymentContainer: containers.deployment
    workspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    privateDnsZoneIds: network.outputs.privateDnsZoneIds
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'kv-${token}'
    deliveryAccountName: delivery.outputs.name
    signingKeySecretName: signingKeySecretName
    signingKeyName: signingKeyName
    workspaceId: monitoring.outputs.workspaceId
    privateEndpointSubnetId: network.outputs.privateEndpointSubnetId
    vaultDnsZoneId: network.outputs.privateDnsZoneIds.vault
  }
}

module communication 'modules/communication.bicep' = {
  name: 'communication'
  scope: rg
  params: {
    tags: tags
    emailServiceName: 'ecs-${token}'
    communicationServiceName: 'acs-${token}'
    dataLocation: emailDataLocation
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'func-${token}'
    planName: 'plan-${token}'
    subnetId: network.outputs.functionsSubnetId
    hostAccountName: hostStorage.outputs.name
    hostBlobEndpoint: hostStorage.outputs.blobEndpoint
    deploymentContainer: containers.deployment
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    workspaceId: monitoring.outputs.workspaceId
    apiClientId: apiClientId
    appSettings: {
      EGRESS_STORAGE__blobServiceUri: staging.outputs.blobEndpoint
      EGRESS_STORAGE__queueServiceUri: staging.outputs.queueEndpoint
      EGRESS_STORAGE__tableServiceUri: staging.outputs.tableEndpoint
      DELIVERY_STORAGE__blobServiceUri: delivery.outputs.blobEndpoint
      STAGING_CONTAINER: containers.staging
      AUDIT_CONTAINER: containers.audit
      RECORDS_CONTAINER: containers.records
      REGISTRY_TABLE_PREFIX: registryTablePrefix
      // The SFTP account: its blobs by identity (the sealed files), its local users and firewall
      // through Azure Resource Manager (the account's resource id), and the address recipients use.
      SFTP_STORAGE__blobServiceUri: sftp.outputs.blobEndpoint
      SFTP_ACCOUNT_ID: sftp.outputs.id
      SFTP_HOST: empty(sftpHost) ? '${sftp.outputs.name}.blob.${environment().suffixes.storage}' : sftpHost
      KEY_VAULT_URL: keyVault.outputs.uri
      SIGNING_KEY_SECRET_NAME: signingKeySecretName
      EMAIL_BACKEND: 'acs'
      ACS_ENDPOINT: communication.outputs.endpoint
      EMAIL_SENDER: communication.outputs.senderAddress
      SYSTEM_MANAGER_EMAIL: systemManagerEmail
      SAS_ALLOW_HTTP: 'false'
      BLOB_TRIGGER_SOURCE: 'EventGrid'
      EXPIRY_SCHEDULE: '0 */5 * * * *'
      RETENTION_HOURS: retentionHours
      REQUIRE_MANAGER_PRINCIPAL: 'true'
      MANAGER_ROLE: 'EgressManager'
      MAX_EXPIRY_HOURS_TIER_0_1: '336'
      MAX_EXPIRY_HOURS_TIER_2_3: '72'
      MAX_IP_RANGE_PREFIX: '24'
      COPY_WORKERS: '8'
      // Sign-off by the named classifiers (DESIGN 3a): never trust the manifest's decisions alone
      // in Azure, and the signed-in person must be the one named. PUBLIC_BASE_URL is set in
      // modules/functionapp.bicep, from the app's own host name.
      CLASSIFICATION_SIGNOFF: 'required'
      SIGNOFF_REQUIRE_PRINCIPAL: 'true'
      SIGNOFF_TTL_HOURS: signoffTtlHours
      RELEASE_QUEUE: queues.release
    }
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    stagingAccountName: staging.outputs.name
    releaseQueueName: queues.release
    blobTriggerPoisonQueueName: queues.blobTriggerPoison
    deliveryAccountName: delivery.outputs.name
    sftpAccountName: sftp.outputs.name
    hostAccountName: hostStorage.outputs.name
    keyVaultName: keyVault.outputs.name
    communicationServiceName: communication.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module events 'modules/eventgrid-topic.bicep' = {
  name: 'eventgrid-topic'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'evgt-${token}'
    stagingAccountId: staging.outputs.id
  }
}

// azd keeps these in the environment; infra/hooks/postdeploy.sh reads them.
output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = functionApp.outputs.url
output STAGING_ACCOUNT_NAME string = staging.outputs.name
output STAGING_CONTAINER string = containers.staging
output STAGING_SYSTEM_TOPIC_NAME string = events.outputs.name
output DELIVERY_ACCOUNT_NAME string = delivery.outputs.name
output SFTP_ACCOUNT_NAME string = sftp.outputs.name
output KEY_VAULT_NAME string = keyVault.outputs.name
output EMAIL_SENDER string = communication.outputs.senderAddress
