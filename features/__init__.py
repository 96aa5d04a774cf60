"""Tile embeddings: the encoder registry (timm), tile reading for encoders, feature bags."""
