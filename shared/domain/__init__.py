"""Pure domain: models, manifest rules and policy. No Azure SDK and no I/O here."""
