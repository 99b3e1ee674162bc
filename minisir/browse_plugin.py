"""Datasette hooks of `minisir archive browse`: embedding blobs stay out of the default views.

Why: a 384-float blob per problem is noise on every page and in every JSON answer. The
problems table (HTML and JSON) drops the column unless the request picks its columns itself
(?_col= / ?_nocol=); row pages and SQL results show a short note instead of a download link.
Imported only once Datasette is installed.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from datasette import hookimpl

HIDDEN = {"problems": "embedding"}  # table -> blob column hidden by default


def _table_of(path: str) -> str | None:
    """'problems' for /<db>/problems and /<db>/problems.json, else None."""
    parts = path.strip("/").split("/")
    if len(parts) != 2:
        return None
    table = parts[1].removesuffix(".json")
    return table if table in HIDDEN else None


@hookimpl
def asgi_wrapper(datasette):
    def wrap(app):
        async def hide(scope, receive, send):
            if scope.get("type") == "http" and (table := _table_of(scope.get("path", ""))):
                args = parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True)
                if not any(key in ("_col", "_nocol") for key, _ in args):
                    args.append(("_nocol", HIDDEN[table]))
                    scope = dict(scope, query_string=urlencode(args).encode())
            await app(scope, receive, send)

        return hide

    return wrap


@hookimpl
def render_cell(value, column):
    if column in HIDDEN.values() and isinstance(value, bytes):
        return f"({len(value) // 4} floats, hidden)"
    return None
