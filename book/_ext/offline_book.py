"""Sphinx extension that keeps the rendered book self-contained and free of console errors.

* Scripts that reach a page twice are dropped. In this Jupyter Book 1 stack, sphinx-thebe's inline
  configuration (``const THEBE_JS_URL = ...``) is added twice, and the second copy is a SyntaxError.
* The Jupyter widgets manager (``embed-amd.js``, served from ``offline/widgets``) derives the URL of its
  modules and icon fonts from RequireJS module paths, which default to the page's own folder. A per-page
  ``require.config`` maps them to the local copy, so nothing is fetched from elsewhere or 404s.

It also adds the role that puts a run's numbers into a chapter's prose without typing them: ``{run}`DATASET/RUN:FACT```
pastes the fact that the dataset's recipes page (``executed/DATASET-recipes.ipynb``) glued as ``RUN__FACT``, read
there from the run's results files by ``msflow_study.report.run_facts`` (for example ``{run}`bloodmnist/cpu-lam05-x6:acc```).
A fact that page did not glue is a build warning, so an error under ``-W``. A fact of a run whose selected weights were
never recorded (its ``run.json`` has no checkpoint hash) is followed by a dagger that links to the label
``no-checkpoint``, where the book says that its numbers cannot be checked again.

``{glued-figure} PAGE::KEY`` (content: the caption; option ``:name:``) is a numbered figure of an image that another
page glued, which myst-nb's ``glue:figure`` cannot take from another page (for example the method chapter's figure of
the two flows, drawn by a trained network on the explore page).

Sphinx numbers figures along the table of contents, so the figures of pages outside it (the run and recipes pages,
reached from the dataset pages) would stay unnumbered: each such page numbers its captioned figures itself, from 1.

An image without a description of its own (no alt text, or its file name as alt text, as notebook outputs come) gets
its figure's caption, or else the title of its page and its place on it, as alt text.
"""

from __future__ import annotations

from pathlib import Path

from docutils.parsers.rst import directives
from sphinx.builders.html._assets import _JavaScript
from sphinx.util.docutils import SphinxDirective, SphinxRole

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


class RunFact(SphinxRole):
    """``{run}`DATASET/RUN:FACT``` -> the text the recipes page of DATASET glued as ``RUN__FACT``."""

    def run(self):
        from myst_nb.ext.glue.utils import PendingGlueReferenceError, create_pending_glue_ref

        def error(message: str):
            msg = self.inliner.reporter.error(message, line=self.lineno)
            return [self.inliner.problematic(self.rawtext, self.rawtext, msg)], [msg]

        target, _, fact = self.text.rpartition(":")
        dataset, _, run = target.partition("/")
        if not (dataset and run and fact):
            return error(f"{{run}} wants DATASET/RUN:FACT (e.g. bloodmnist/cpu-lam05-x6:acc), got {self.text!r}")
        pages = sorted(d for d in self.env.found_docs if d.endswith(f"executed/{dataset}-recipes"))
        if not pages:
            return error(f"{{run}}`{self.text}`: no recipes page executed/{dataset}-recipes in the book "
                         f"(scripts/study.sh --compare ... -- {dataset} makes it)")
        try:
            ref = create_pending_glue_ref(self.inliner.document, self.get_source_info()[0], self.lineno,
                                          f"/{pages[0]}.ipynb", f"{run}__{fact}",
                                          inline=True, gtype="text", fmt_spec="s")
        except PendingGlueReferenceError as exc:
            return error(f"{{run}}`{self.text}`: {exc}")
        if checkpoint_lost(Path(self.env.srcdir) / "results" / f"{dataset}-{run}"):
            return [ref, _dagger()], []
        return [ref], []


def checkpoint_lost(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` records that its selected weights were never kept (``run.json``)."""
    import json

    record = run_dir / "run.json"
    if not record.exists():
        return False
    return json.loads(record.read_text()).get("checkpoint", {}).get("sha256", "") is None


def _dagger():
    from docutils import nodes
    from sphinx import addnodes

    ref = addnodes.pending_xref("", refdomain="std", reftype="ref", reftarget="no-checkpoint", refexplicit=True,
                                refwarn=True)
    ref += nodes.inline("", "\u2020")
    return nodes.superscript("", "", ref, classes=["no-checkpoint"])


class GluedFigure(SphinxDirective):
    """``{glued-figure} PAGE::KEY`` -> a numbered figure of the output PAGE glued as KEY, captioned by the content."""

    required_arguments = 1
    has_content = True
    option_spec = {"name": directives.unchanged}

    def run(self):
        from docutils import nodes
        from myst_nb.ext.glue.utils import PendingGlueReferenceError, create_pending_glue_ref

        page, _, key = self.arguments[0].partition("::")
        if not (page and key):
            return [self.state.document.reporter.warning(f"glued-figure wants PAGE::KEY, got {self.arguments[0]!r}",
                                                         line=self.lineno)]
        try:
            ref = create_pending_glue_ref(self.state.document, self.get_source_info()[0], self.lineno, page, key)
        except PendingGlueReferenceError as exc:
            return [self.state.document.reporter.warning(f"glued-figure {self.arguments[0]}: {exc}", line=self.lineno)]
        figure = nodes.figure("", ref)
        self.set_source_info(figure)
        if self.content:
            parsed = nodes.Element()
            self.state.nested_parse(self.content, self.content_offset, parsed)
            first = parsed[0] if len(parsed) else None
            if isinstance(first, nodes.paragraph):
                figure += nodes.caption(first.rawsource, "", *first.children)
                figure += parsed[1:]
        self.add_name(figure)
        return [figure]


def _describe_images(app, doctree, docname):
    from docutils import nodes

    title = app.env.titles.get(docname)
    page = title.astext() if title is not None else docname
    for n, image in enumerate(doctree.findall(nodes.image), start=1):
        alt, uri = image.get("alt", ""), image.get("uri", "")
        if alt and alt != uri and not alt.endswith((".png", ".svg", ".jpg", ".jpeg", ".gif")):
            continue
        caption = next((c.astext() for parent in (image.parent, getattr(image.parent, "parent", None))
                        if isinstance(parent, nodes.figure) for c in parent.findall(nodes.caption)), "")
        image["alt"] = " ".join(caption.split())[:300] if caption else f"{page}: output image {n}"


def _number_figures_off_the_toc(app, env):
    """Number the captioned figures of documents that the table of contents does not reach (Sphinx leaves them without
    numbers), page by page from 1; return the documents whose numbers changed, for Sphinx to write again."""
    from docutils import nodes

    previous = getattr(env, "msflow_off_toc_fignumbers", {})
    current = {}
    for docname in sorted(env.found_docs):
        if env.toc_fignumbers.get(docname) or docname == env.config.root_doc:
            continue
        doctree = env.get_doctree(docname)
        figures = [f["ids"][0] for f in doctree.findall(nodes.figure)
                   if f["ids"] and any(isinstance(c, nodes.caption) for c in f.children)]
        if figures:
            current[docname] = {"figure": {fid: (n,) for n, fid in enumerate(figures, start=1)}}
    env.toc_fignumbers.update(current)
    env.msflow_off_toc_fignumbers = current
    return [d for d in set(current) | set(previous) if current.get(d) != previous.get(d)]


def setup(app):
    app.connect("env-get-updated", _number_figures_off_the_toc, priority=900)  # after Sphinx numbers the toc's figures
    app.connect("html-page-context", _fix_page_scripts, priority=900)  # after the handlers that add scripts
    app.connect("doctree-resolved", _describe_images)
    app.add_role("run", RunFact())
    app.add_directive("glued-figure", GluedFigure)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
