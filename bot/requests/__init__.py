"""requests: the request's life in its issue: review (status comment), labels, slash-commands
and their permissions, the state machine, upgrades, event handlers (incl. /rotate and leak response).
May import: core, github, allowlist, intake (router), rules, access."""
