"""Mesh files and preview images of the avatars."""
