"""Policy backends: ``observation -> chunk (H, A)``; see ``base.ChunkPolicy``."""
