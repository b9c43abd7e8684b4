"""Data: image/mask reading, transforms, benchmark readers, split lists and episodes."""
