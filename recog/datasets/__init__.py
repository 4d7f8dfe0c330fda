"""Manifests, webdataset shards, preflight checks, length-bucketed batching."""
