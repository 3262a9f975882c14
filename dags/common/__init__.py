"""What every shadowgate DAG shares: default arguments, the failure alert, the assets between DAGs.

Imported as ``common`` because Airflow puts the DAG folder on ``sys.path`` (the dag-processor and the task runner
add the bundle's path); ``.airflowignore`` keeps the parser from looking for DAGs in it.
"""
