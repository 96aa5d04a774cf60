"""mkdocs hook: drop the Sphinx roles (``:class:``, ``:func:``, ...) of the code's docstrings.

The docstrings cross-reference with Sphinx roles, which mkdocstrings leaves as text before the
code span (":class:`X`" shows as ":class:" and then ``X``); the API page shows the name alone.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub("", html)
