"""The benchmark (`make bench`, `python -m bench.run`): ceiling, processor, scaling, latency, memory.

A program, not a test: see DESIGN.md, "Performance: how it is measured", and `python -m bench.run --help`.
"""
