"""The Function App: registers the blueprints and nothing else."""

import azure.functions as func

from functions.expiry_timer import bp as expiry_timer
from functions.http_api import bp as http_api
from functions.openapi import bp as openapi
from functions.release_queue import bp as release_queue
from functions.signoff_pages import bp as signoff_pages
from functions.staging_trigger import bp as staging_trigger

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(staging_trigger)
app.register_functions(release_queue)
app.register_functions(http_api)
app.register_functions(signoff_pages)
app.register_functions(expiry_timer)
app.register_functions(openapi)
