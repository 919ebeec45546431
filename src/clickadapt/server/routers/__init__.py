"""HTTP routers: thin wrappers that turn requests into calls of one service part (catalogue, models, sessions)."""
