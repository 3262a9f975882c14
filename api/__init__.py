"""The decision API (FastAPI): HTTP in and out only; the decisions are made by ``shadowgate.serving``."""
