"""studio.app: the top of the studio, what assembles the layers below it into the programs an operator runs.

`cli.py` is the `localai-studio` command; `runner.py` runs services (`up`, `run`); `ops.py` (with
`ops_postgres.py`) is backup and restore; `dbcopy.py` is `db copy`. Nothing below imports this package
(import-linter's contracts in pyproject.toml: app -> gateway -> functions -> studio -> events).
"""
