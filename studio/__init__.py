"""studio: the platform beneath every function and the gateway: `runtime/` (settings, the function
declaration and its host, the database, logs, errors), `clients/` (Ollama, Stripe, the fleet) and
`catalog/` (the models for sale). It never imports a function, the gateway or `app/`.
"""
