"""intake: how events get in and are dispatched: the webhook endpoint, the inbox (delivery
table), the worker, the router, the handler registry, redelivery and the process runtime.
May import: core, github, allowlist (handler modules are loaded by name, never imported here)."""
