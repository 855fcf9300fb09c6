"""Devices: where bundles run. One small file per kind, found through the registry."""
