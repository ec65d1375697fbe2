"""Sphinx extension that keeps the rendered book self-contained and free of console errors.

* Scripts that reach a page twice are dropped. In this Jupyter Book 1 stack, sphinx-thebe's inline
  configuration (``const THEBE_JS_URL = ...``) is added twice, and the second copy is a SyntaxError.
* The Jupyter widgets manager (``embed-amd.js``, served from ``offline/widgets``) derives the URL of its
  modules and icon fonts from RequireJS module paths, which default to the page's own folder. A per-page
  ``require.config`` maps them to the local copy, so nothing is fetched from elsewhere or 404s.
"""

from __future__ import annotations

from sphinx.builders.html._assets import _JavaScript

WIDGETS_DIR = "offline/widgets"


def _fix_page_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""  # inline scripts come with None or ""
        key = (str(filename), getattr(js, "attributes", {}).get("body"))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    for i, js in enumerate(kept):
        if str(getattr(js, "filename", "")).endswith("offline/require.js"):
            root = context["pathto"](WIDGETS_DIR, 1)
            body = f'require.config({{paths: {{"@jupyter-widgets/html-manager/dist": "{root}", "@jupyter-widgets": "{root}"}}}});'
            kept.insert(i + 1, _JavaScript("", priority=js.priority, body=body))
            break
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", _fix_page_scripts, priority=900)  # after the handlers that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
