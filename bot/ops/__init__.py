"""ops: operating a deployment: doctor, reconcile, database copy, migrations, grants
import/export.
May import: every layer below cli (core … web)."""
