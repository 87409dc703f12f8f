"""Example plug-in backends (``policy.backend: plugin``); docs/policy-server.md explains them."""
