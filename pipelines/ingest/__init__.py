"""Ingest: landing files (core CSV/Parquet, open-banking JSON) to bronze rows plus a quarantine."""
