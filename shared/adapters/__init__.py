"""Adapters: one per external service, each translating SDK errors into ``shared.errors``."""
