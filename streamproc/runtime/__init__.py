"""Wiring: config → objects, the one-process pipeline, the embed service, supervisor, roles and chip transport.

May use every package below it (``vision``, ``stream``, ``search``, ``feed``, ``records``, ``models``); not ``cli``.
"""
