"""Where a quantized network's error comes from: per-layer statistics, plots and a markdown report."""
