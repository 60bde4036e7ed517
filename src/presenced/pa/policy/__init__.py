"""Authorization of watchers (pure): RFC 4745 common-policy rules with the RFC 5025 presence
extensions — parsing (`rules`), evaluation and combining (`evaluate`), and the per-watcher
transformation of a presence document (`transform`)."""
