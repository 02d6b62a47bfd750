"""Checkpoint validity (manifests), atomic writes, and (issue 7) volume sync."""
