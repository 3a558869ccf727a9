// The research environment's way into the staging account: a private endpoint in its subnet,
// and its virtual network linked to the blob private DNS zone so the usual host name resolves
// there. Deployed into the research subnet's resource group.
param location string
param tags object
param subnetId string
param stagingAccountId string
param blobDnsZoneId string

var vnetId = substring(subnetId, 0, lastIndexOf(subnetId, '/subnets/'))

module endpoint 'private-endpoint.bicep' = {
  name: 'pe-research-staging-blob'
  params: {
    location: location
    tags: tags
    name: 'pe-egress-staging-blob'
    subnetId: subnetId
    targetId: stagingAccountId
    groupId: 'blob'
    dnsZoneId: blobDnsZoneId
  }
}

module dnsLink 'research-dns-link.bicep' = {
  name: 'research-dns-link'
  scope: resourceGroup(split(blobDnsZoneId, '/')[2], split(blobDnsZoneId, '/')[4])
  params: {
    tags: tags
    zoneName: last(split(blobDnsZoneId, '/'))
    vnetId: vnetId
  }
}
