"""rules: what a valid request is: the issue form's parsing and the field checks (domains,
app ids, contacts, applicants, tiers, text), shared by request review and self-service changes.
May import: core, github."""
