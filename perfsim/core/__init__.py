"""Engine core: the run context, packets, CPU cores, RNG streams and cost profiles."""
