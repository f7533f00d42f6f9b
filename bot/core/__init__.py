"""core: the vocabulary every area shares: settings and policy, database and models, migrations,
clock, errors, audit rows, metrics, logs, packaged resources and comment rendering.
May import: nothing of ours outside core (the lowest layer)."""
