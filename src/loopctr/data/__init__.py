"""Datasets: schemas, source readers, preparation into column files, and the batch loader."""
