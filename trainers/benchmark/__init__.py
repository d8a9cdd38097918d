"""Speed and memory benchmark: the sundae-bench CLI (cli.py) over bench_* (harness, baselines, cases, report)."""
