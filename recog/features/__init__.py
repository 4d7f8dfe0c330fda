"""Feature extractors: inputs -> (time, feat) float frames."""
