"""Fused ops, each with a plain-torch reference it is tested against; switched on by config keys."""
