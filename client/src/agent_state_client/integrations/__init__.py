"""Adapters that make agent-state the storage of agent frameworks.

Each one lives in a module of its own and needs its framework installed
(an optional extra of agent-state-client): importing this package imports
none of them.
"""
