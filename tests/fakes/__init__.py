"""Contract fakes: real HTTP servers that stand in for vendor APIs in tests, checking each request
against the vendor's published shapes and injecting the faults real APIs have."""
