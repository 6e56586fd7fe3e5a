"""studio: the platform beneath every function and the gateway: `runtime/` (settings, the function
declaration and its host, the database, logs, errors), `clients/` (Ollama, Stripe, the fleet) and
`catalog/` (the models for sale); none of them imports a function or the gateway.

`app/` sits on top of everything instead: the `localai-studio` command, the runner that starts the
functions and the gateway (`up`, `run`), backups and `db copy`. import-linter keeps the layers
(pyproject.toml: studio.app -> gateway -> functions -> the platform -> events).
"""
