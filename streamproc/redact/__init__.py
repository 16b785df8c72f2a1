"""Redaction: release-ready video with every face hidden (detect + track the whole clip, then render).

May use vision, stream, search, records, models and the shared vocabulary; see docs/redaction.md.
"""
