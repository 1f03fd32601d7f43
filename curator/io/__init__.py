"""Reading inputs into partitions and writing one output file per input file."""
