"""One stream's front half: decode a source, buffer frames, and run detect → track → best shot → align on them.

Uses ``vision``, ``models`` and the shared vocabulary; also checks the use-policy authorisation before live search.
"""
