"""The smallest settings that migrate: one app, PostgreSQL from ZDM_DSN (libpq URL or key=value)."""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("ZDM_DSN", "dbname=shop"))

SECRET_KEY = "example-only"
USE_TZ = True
INSTALLED_APPS = ["accounts"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}
