"""Renderers turn a timeline into bytes of some format; the CLI decides where they go."""
