"""People around the decision: the human-review rules (two-person confirmation, one reject rejects).

Uses ``feed`` (decisions live in the journal), ``records`` and the shared vocabulary.
"""
