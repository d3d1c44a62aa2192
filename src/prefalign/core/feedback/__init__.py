"""Feedback ingestion: raw human/AI feedback -> margin-annotated preference pairs (no kedro here)."""
