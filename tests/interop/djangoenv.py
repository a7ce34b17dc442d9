"""Django configured in-process for the interop scripts: no project, just settings.configure().

`configure(url)` points Django's "default" database at a Postgres URL of the form the Rust tests
use (postgres://user:password@host:port/dbname?sslmode=...), installs the two apps
django-pglock needs (pgactivity and pglock), and runs django.setup().
"""

import urllib.parse

import django
from django.conf import settings

# URL query parameters handed on to libpq (through psycopg) as connection options.
_LIBPQ_OPTIONS = (
    "application_name",
    "connect_timeout",
    "options",
    "sslcert",
    "sslkey",
    "sslmode",
    "sslrootcert",
)


def database_settings(url):
    """Django's DATABASES["default"] for a postgres:// URL.

    The host may be a name, an IP address, or (percent-encoded, or as a `host` query parameter)
    the directory of a Unix socket, as libpq and sqlx both accept.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a postgres:// URL: {parts.scheme}://...")
    query = dict(urllib.parse.parse_qsl(parts.query))
    host = query.pop("host", None) or urllib.parse.unquote(parts.hostname or "")
    db = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": urllib.parse.unquote(parts.path.lstrip("/")) or "postgres",
        "USER": urllib.parse.unquote(parts.username or ""),
        "PASSWORD": urllib.parse.unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or query.pop("port", "")),
        "OPTIONS": {key: value for key, value in query.items() if key in _LIBPQ_OPTIONS},
    }
    return db


def configure(url=None):
    """Configure and set up Django; with no URL, without a database (enough for hashing)."""
    settings.configure(
        DATABASES={"default": database_settings(url)} if url else {},
        INSTALLED_APPS=["pgactivity", "pglock"],
        USE_TZ=True,
        DEBUG=False,
    )
    django.setup()
