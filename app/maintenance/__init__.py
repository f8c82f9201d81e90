"""Looking after an index's state: backup and restore (``backup.py``), the durable rows they and
``migrate.py`` carry between engines (``durable.py``), and their commands (``cli.py``)."""
