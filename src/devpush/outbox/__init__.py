"""Domain events through a transactional outbox.

Services write an event in the same transaction as the state change it describes
(`emit`); `Dispatcher` delivers each event at least once, in commit order, to every
subscriber (a plain async function, registered in `devpush.subscribers`), each with its own
cursor. A subscriber that fails is retried with backoff and its failure is recorded on its
cursor; it holds back only itself. This package knows event names, not the domains: the
subscribers and what they need come in as arguments.
"""
