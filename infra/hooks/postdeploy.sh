#!/bin/sh
# azd postdeploy hook: subscribe the blob trigger to manifest.json uploads in staging.
# azd exports the outputs of infra/main.bicep as environment variables.
set -eu
az deployment group create \
  --name eventgrid-subscription \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --template-file "$(dirname "$0")/../eventgrid-subscription.bicep" \
  --parameters functionAppName="$FUNCTION_APP_NAME" \
               systemTopicName="$STAGING_SYSTEM_TOPIC_NAME" \
               stagingContainer="$STAGING_CONTAINER" \
  --output none
echo "Event Grid now sends manifest.json uploads in $STAGING_CONTAINER to $FUNCTION_APP_NAME."

# Sign-off by the named classifiers (the auth comment in infra/modules/functionapp.bicep): any user
# of the tenant must be able to sign in to the API's app registration from a browser. Checked, not
# changed: the registration belongs to whoever created it (README, Deploy, step 1).
if [ -n "${EGRESS_API_CLIENT_ID:-}" ]; then
  callback="$FUNCTION_APP_URL/.auth/login/aad/callback"
  if [ "$(az ad sp show --id "$EGRESS_API_CLIENT_ID" --query appRoleAssignmentRequired -o tsv 2>/dev/null)" = "true" ]; then
    echo "WARNING: the API's app registration requires role assignment, so classifiers cannot sign in to sign off." >&2
    echo "  az ad sp update --id $EGRESS_API_CLIENT_ID --set appRoleAssignmentRequired=false" >&2
  fi
  if [ "$(az ad app show --id "$EGRESS_API_CLIENT_ID" \
      --query "contains(web.redirectUris, '$callback') && web.implicitGrantSettings.enableIdTokenIssuance" \
      -o tsv 2>/dev/null)" != "true" ]; then
    echo "WARNING: browser sign-in (the sign-off page) needs the redirect URI $callback and ID tokens:" >&2
    echo "  az ad app update --id $EGRESS_API_CLIENT_ID --web-redirect-uris $callback --enable-id-token-issuance true" >&2
  fi
fi
