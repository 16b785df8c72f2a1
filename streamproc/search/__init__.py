"""The watchlist and the decision: HNSW index, subjects and templates, calibrated thresholds, the k-of-n policy.

Uses ``vision`` (enrolment embeds photos), ``records`` (audit) and the shared vocabulary.
"""
