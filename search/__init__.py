"""Search engines over the spaces in spaces/, all calling the one trial function.

To add an engine: write search/<name>_engine.py with a class that has `name` and
`run(space, runner, budget)`, and register it in search/engines.py.
"""
