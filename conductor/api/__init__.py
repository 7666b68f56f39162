"""The HTTP entry point: signed CI webhooks, REST for tracks and releases, health and metrics."""

from conductor.api.app import create_app

__all__ = ["create_app"]
