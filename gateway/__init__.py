"""gateway: the front door behind nginx. Routes HTTP to functions (in-process or over HTTP)."""
