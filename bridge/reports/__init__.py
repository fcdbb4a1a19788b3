"""Service reports: how clients were served in a period, read from the record (see model)."""
