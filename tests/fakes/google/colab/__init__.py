"""A fake `google.colab` for tests: put tests/fakes on PYTHONPATH (or sys.path) to make it importable."""
