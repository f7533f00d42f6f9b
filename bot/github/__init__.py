"""github: the only code that talks to GitHub: the App and installation clients (PyGithub
underneath) and people by numeric id (identity).
May import: core."""
