"""Local runner: the process manager behind make up / down / status, first-run seeding, one Redis launcher."""
