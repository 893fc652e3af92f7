"""Procedural terrain and obstacle maps added to robot scenes."""
