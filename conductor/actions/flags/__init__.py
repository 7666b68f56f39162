"""Feature flags: Unleash and Flagsmith, behind one FlagClient interface."""
