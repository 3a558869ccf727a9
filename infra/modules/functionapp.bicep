// The Function App: Linux, Python 3.11, Flex Consumption, system-assigned managed identity,
// outbound through the service network (to the private staging account, host storage and Key
// Vault). The HTTP API answers only callers signed in with Entra ID (App Service
// authentication); the code then requires the EgressManager app role and a function key.
param location string
param tags object
param name string
param planName string
param subnetId string
param hostAccountName string
param hostBlobEndpoint string
param deploymentContainer string
param appInsightsConnectionString string
param workspaceId string
param apiClientId string

@description('The service settings (README, Settings); the platform ones are added here.')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption offers zone redundancy only in some regions; set zoneRedundant here where the region has it
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the HTTP API and the Event Grid webhook are called from outside the network; Entra ID sign-in, the EgressManager role and function keys guard them
  // checkov:skip=CKV_AZURE_17: callers prove who they are with Entra ID tokens and function keys; Event Grid cannot present a client certificate
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand; Event Grid retries a delivery and the timer runs again, so no standing instance is needed
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no fixed instances to take out of rotation; liveness is GET /api/health
  // checkov:skip=CKV_AZURE_221: the HTTP API and the Event Grid webhook are called from outside the network; Entra ID sign-in, the EgressManager role and function keys guard them
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostBlobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_63: reads the web config's file-system logging, which Flex Consumption does not have; logs go to Application Insights and Log Analytics
  // checkov:skip=CKV_AZURE_65: reads the web config's file-system logging, which Flex Consumption does not have; logs go to Application Insights and Log Analytics
  // checkov:skip=CKV_AZURE_66: reads the web config's file-system logging, which Flex Consumption does not have; logs go to Application Insights and Log Analytics
  // checkov:skip=CKV_AZURE_80: the app runs Python, not .NET
  // checkov:skip=CKV_AZURE_88: the app keeps no state in Azure Files (Flex Consumption has none)
  // checkov:skip=CKV_AZURE_222: see the site: public network access is set there and guarded by sign-in
  // checkov:skip=CKV_AZURE_13: authentication is the authsettingsV2 resource below
  parent: app
  name: 'appsettings'
  properties: union(appSettings, {
    // Host storage by identity: the account name alone selects the system-assigned identity.
    AzureWebJobsStorage__accountName: hostAccountName
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  })
}

// App Service authentication: a caller without a valid Entra ID token for this API gets 401
// before any code runs. Health and the blob extension webhook (Event Grid, which carries the
// blob extension key) stay outside it.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_63: reads the web config's file-system logging, which Flex Consumption does not have; logs go to Application Insights and Log Analytics
  // checkov:skip=CKV_AZURE_65: reads the web config's file-system logging, which Flex Consumption does not have; logs go to Application Insights and Log Analytics
  // checkov:skip=CKV_AZURE_66: reads the web config's file-system logging, which Flex Consumption does not have; logs go to Application Insights and Log Analytics
  // checkov:skip=CKV_AZURE_80: the app runs Python, not .NET
  // checkov:skip=CKV_AZURE_88: the app keeps no state in Azure Files (Flex Consumption has none)
  // checkov:skip=CKV_AZURE_222: see the site: public network access is set there and guarded by sign-in
  // checkov:skip=CKV_AZURE_13: authsettingsV2 turns authentication on with platform.enabled; this check reads the older authsettings schema
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
        '/runtime/webhooks/blobs'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${subscription().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${apiClientId}'
            apiClientId
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

resource appLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'function-logs'
  scope: app
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

output name string = app.name
output url string = 'https://${app.properties.defaultHostName}'
output principalId string = app.identity.principalId
