"""web: the pages: shared helpers, sign-in, portal, claim, dashboard (with overview, queue,
search, charts), setup, health and the metrics endpoint's page helpers.
May import: every service layer (core … requests); never ops or cli."""
