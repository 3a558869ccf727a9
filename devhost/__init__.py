"""A faithful local Functions host for this app, for machines where Core Tools cannot run.

It reads the app's own indexed bindings (``function_app.app``), so there is no second list of
functions to keep in step: blob triggers are polled with receipts, HTTP routes are served with
function keys, timers run on their NCRONTAB schedules.
"""
