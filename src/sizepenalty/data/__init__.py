"""Data side: synthetic cohort, ISLES 2022 / manifest ingest with validation, preprocessing, folds."""
