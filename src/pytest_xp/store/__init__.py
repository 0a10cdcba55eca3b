"""The results store: codec, records, cache keys, files on disk, provenance. Pure: no pytest."""
