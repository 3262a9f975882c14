"""Create (or re-password) the decision API's read-only MLflow user; run by compose's one-shot ``mlflow-init``.

The API only reads the registry, so it gets its own user with the server's default permission (READ, see
``basic_auth.ini``) instead of the admin's credentials: a compromised API cannot move an alias or register a model.

Environment: ``MLFLOW_TRACKING_URI``, the admin's ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``,
``MLFLOW_API_USERNAME`` (default ``shadowgate-api``) and ``MLFLOW_API_PASSWORD``. Idempotent.
"""

from __future__ import annotations

import os

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client


def main() -> None:
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    username = os.environ.get("MLFLOW_API_USERNAME", "shadowgate-api")
    password = os.environ["MLFLOW_API_PASSWORD"]
    try:
        user = client.get_user(username)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        print(f"mlflow-init: created read-only user {username}")
        return
    if user.is_admin:
        raise SystemExit(f"mlflow-init: {username} is an admin; the API's user must not be")
    client.update_user_password(username, password)
    print(f"mlflow-init: user {username} exists; password set")


if __name__ == "__main__":
    main()
