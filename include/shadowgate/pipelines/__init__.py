"""One orchestration-free function per DAG task; adapters and settings are passed in."""
