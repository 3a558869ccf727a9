"""The egress service's core: domain and policy, services, adapters."""
