"""The event feed: event schema, durable journal, ZeroMQ publish/subscribe, gap replay and CURVE security.

Uses ``records`` and the shared vocabulary; knows nothing of video, faces or the watchlist.
"""
