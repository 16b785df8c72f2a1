"""The review console: a server-rendered web app where signed-in reviewers confirm or reject candidates.

Uses ``govern`` (accounts and the review rules), ``feed`` (the journal), ``search`` (the watchlist's subjects and
enrolment chips), ``records`` (the audit log) and the shared vocabulary; only ``cli`` uses it.
"""
