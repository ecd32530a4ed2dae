"""Pure Flax Linen models; they know logical axis names, nothing of meshes or data."""
