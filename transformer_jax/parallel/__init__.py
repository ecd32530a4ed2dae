"""The device mesh, logical sharding rules and memory accounting."""
