"""access: what an account holds and how it changes: grants, keys (claim, rotation),
session generations, domain changes and their proof, self-service, an account's holdings.
May import: core, github, allowlist, rules."""
