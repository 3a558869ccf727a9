"""Test helpers: local servers (Azurite, SMTP sink) and package builders."""
