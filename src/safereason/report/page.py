"""A self-contained HTML page made of sections, each rendered by its own Jinja2 partial template.

The templates ship as package data in ``safereason/report/templates/``: ``layout.html.j2`` is the page (head,
inline stylesheet ``style.css.j2``, title, a nav link per section), and each section is one partial that the
layout ``{% include %}``s under the section's ``<h2>``. Autoescaping is on for every template, so text taken from
run dirs (model outputs are adversarial) is escaped unless Python wraps it in :class:`markupsafe.Markup`;
the Python side only prepares plain data (dicts, dataclasses, preformatted numbers) and figures.

To add a section (an attack or training analysis, say):

1. write ``templates/section_<name>.html.j2``; it sees its data as ``section.data`` (and the page's ``title``)::

       <p class="note">{{ section.data.n_steps }} steps.</p>
       <table>{% for row in section.data.rows %}<tr><td>{{ row.goal }}</td></tr>{% endfor %}</table>

2. build ``Section("attack", "Attack", "section_<name>.html.j2", {...})`` in Python and pass it, in page order,
   to :func:`render_page`. Shared classes (``note``, ``empty``, ``scroll``, ``num``, ``badge b-*``, ``pre.text``)
   are in ``style.css.j2``; figures go in as ``data:`` URIs (:func:`data_uri`) so the page stays one file.

Another package keeps its partials in its own ``templates/`` folder (shipped as package data) and names itself:
``render_page(title, sections, packages=("safereason.attacks",))`` looks there first, then here, so its partials
can also include the report's (``section_plots.html.j2`` takes a list of ``{caption, src}``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape


@dataclass(frozen=True)
class Section:
    """One titled part of the page: ``template`` renders ``data`` below an ``<h2 id=id>title</h2>``."""

    id: str
    title: str
    template: str
    data: Any = None
    nav: bool = True  # linked from the nav bar under the page title


@cache
def environment(*packages: str) -> Environment:
    """The template environment: ``packages``' ``templates/`` folders, then the report's; autoescaping on,
    undefined names are errors."""
    return Environment(
        loader=ChoiceLoader([PackageLoader(p, "templates") for p in (*packages, "safereason.report")]),
        autoescape=select_autoescape(default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(title: str, sections: Sequence[Section], subtitle: str = "", *, packages: Sequence[str] = ()) -> str:
    """The whole page: ``title`` as heading, ``subtitle`` (text, or Markup) below it, then ``sections`` in order;
    section templates are looked up in ``packages`` (see the module docstring), then in the report's."""
    ids = [s.id for s in sections]
    if len(set(ids)) < len(ids):
        raise ValueError(f"section ids must be unique, got {ids}")
    layout = environment(*packages).get_template("layout.html.j2")
    return layout.render(title=title, subtitle=subtitle, sections=sections)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI for an ``<img src>``, so the page needs no files next to it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
