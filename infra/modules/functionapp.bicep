// The Function App: Linux, Python 3.11, Flex Consumption, system-assigned managed identity,
// outbound through the service network (to the private staging account, host storage and Key
// Vault). The HTTP API answers only callers signed in with Entra ID (App Service
// authentication); the code then requires the EgressManager app role and a function key on the
// manager routes, and the named person's email on the sign-off page.
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
    // Base of the sign-off links in emails. Set here, not with the other service settings in
    // main.bicep, because it is the site's own host name: this resource is separate from the site,
    // so it may read app.properties (the site's siteConfig could not), and it follows whatever
    // host name Azure gives the app (region-unique default host names, sovereign clouds).
    PUBLIC_BASE_URL: 'https://${app.properties.defaultHostName}'
  })
}

// App Service authentication: no request reaches the code without an Entra ID sign-in. Health
// and the blob extension webhook (Event Grid, which carries the blob extension key) stay outside
// it; nothing else may: the sign-off page /api/signoff/{token} stays behind it, because with
// SIGNOFF_REQUIRE_PRINCIPAL the code compares the signed-in email to the named classifier.
//
// Classifiers are people of the tenant who hold no app role, so nothing here limits who may sign
// in: no allowedPrincipals, allowedApplications or group/role checks in
// defaultAuthorizationPolicy or jwtClaimChecks. Every signed-in user of the tenant gets through
// App Service authentication; what they may do is decided by the code, route by route: the manager
// API requires the MANAGER_ROLE (EgressManager) app role in the token and a function key, so a
// classifier's sign-in opens no manager route; a sign-off page answers only the person it names.
// For the same reason the app registration must NOT require assignment
// (appRoleAssignmentRequired=false on its service principal): with assignment required, Entra ID
// refuses a token to anyone without an app role, i.e. to every classifier (postdeploy.sh warns).
//
// Unauthenticated requests are redirected to the Entra ID sign-in, not answered 401: a classifier
// opens the link from an email in a browser, signs in and lands back on the page. API clients
// send a bearer token and never see the redirect; one without a token gets the redirect (302)
// instead of a 401, and still reaches no code. The browser sign-in needs the registration's web
// redirect URI https://<host>/.auth/login/aad/callback and ID tokens enabled (postdeploy.sh
// checks both).
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
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
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
