"""HTTP routes, one module per concern; no business logic here."""
