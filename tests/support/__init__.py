"""What the tests and the benchmark share: the real server as a child
process (`server`), throwaway PostgreSQL databases (`postgres`) and typed
calls of the public gRPC contract (`calls`).

It lives in the `tests` package, not in `bench/` or under src/: the tests
are its main users, the benchmark imports it as `tests.support` (it runs as
`python -m bench.run` from the repository root, where `tests` is an
importable package), and nothing here belongs in the installed service.
Nothing in this package imports pytest, so the benchmark runs without it.
"""
