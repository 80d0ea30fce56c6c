"""What the tests and the benchmarks share: sample generators (bench/ scripts put the checkout on sys.path)."""
