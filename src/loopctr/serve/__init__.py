"""Serving: score raw rows with a trained run (predictor), over HTTP (server), or as an exported artifact."""
