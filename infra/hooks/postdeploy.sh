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
