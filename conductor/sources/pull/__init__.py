"""Pulled signals: sources Conductor polls (Sentry, Play vitals, issue trackers, Prometheus, JSON APIs)."""
