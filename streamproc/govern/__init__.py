"""People around the decision: the human-review rules (two-person confirmation, one reject rejects, supervisor
reopen) and the reviewer accounts that prove who decided (scrypt passwords, keys, lock-out).

Uses ``feed`` (decisions live in the journal), ``records`` and the shared vocabulary.
"""
