"""`attnserve bench`: load generation against a running server and compare it with baselines.

workload (what to send) -> driver (how: closed or open loop over gRPC) -> stats (what happened)
-> report (JSON, markdown, plot). suite.py runs the documented benchmark: every baseline on the
same model and requests, side by side, in one run.
"""
