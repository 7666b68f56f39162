"""The one read model: what the API, the CLI and the dashboard show about releases.

Pure rules over frozen dataclasses (status, waiting, gate lights: conductor.read.status) and the
reads that feed them: one release (release), the board (board), one release in depth (page),
insights, tracks and events, and the numbers behind /metrics (stats). Nothing here writes.
"""
