"""The one way msgapi spells JSON: compact, UTF-8 unescaped, as DRF's renderer wrote it.

Python renders users, tokens and errors with ``dumps``; the database renders messages
(SQLite's ``json_object``, PostgreSQL's ``row_to_json``), which write the same bytes.
"""

from __future__ import annotations

import functools
import json

dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
