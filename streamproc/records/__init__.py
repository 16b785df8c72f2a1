"""Tamper-evident records: the hash-chained, signed audit log of every enrolment, search, match and review.

Uses only the shared vocabulary (``errors``, ``fsutil``); written by search, feed, govern and runtime, so it sits
below them.
"""
