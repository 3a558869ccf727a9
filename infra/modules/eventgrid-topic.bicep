// The staging account's Event Grid system topic. The blob trigger (source EventGrid on Flex
// Consumption) is fed by a subscription to this topic, created after the code is deployed
// because it needs the blob extension's key: infra/eventgrid-subscription.bicep.
param location string
param tags object
param name string
param stagingAccountId string

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: stagingAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = topic.name
