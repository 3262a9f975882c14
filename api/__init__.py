"""The decision API (FastAPI). Built by the shadow-serving issue; `make up` starts it once `api/main.py` exists."""
