"""telemetry service (see ../shared DESIGN: built in a later issue)."""
