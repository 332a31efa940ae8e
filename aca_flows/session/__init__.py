"""Sessions: the ``.aca`` layout, atomic writes, journal, lock, checkpoints and usage records."""
