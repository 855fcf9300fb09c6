"""Hardware-aware search over elastic networks (OFA, InstaTune): spaces, latency tables, predictors, finders."""
