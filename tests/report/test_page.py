"""The report page from templates: sections as partials, autoescaping on everything taken from the caller."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import pytest
from jinja2 import TemplateNotFound, UndefinedError
from markupsafe import Markup

from safereason.report.html import badges, sample_view
from safereason.report.page import Section, environment, render_page

EVIL = '<script>alert("x")</script>'


@pytest.fixture()
def extra_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package with its own section partial, as the attack and analysis pages add theirs."""
    pkg = tmp_path / "page_extra_pkg"
    (pkg / "templates").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "templates" / "section_attack.html.j2").write_text(
        '<p class="note">{{ section.data.goal }}</p><p>{{ section.data.n_steps }} steps</p>\n'
        '{% with section = {"data": []} %}{% include "section_plots.html.j2" %}{% endwith %}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "page_extra_pkg", raising=False)
    environment.cache_clear()  # environments are cached per package list; this one's folder is new
    yield "page_extra_pkg"
    environment.cache_clear()


def test_templates_ship_with_the_package() -> None:
    names = {p.name for p in files("safereason.report").joinpath("templates").iterdir()}
    assert {"layout.html.j2", "style.css.j2", "section_runs.html.j2", "section_metrics.html.j2",
            "section_samples.html.j2"} <= names


def test_sections_render_in_order_with_nav_and_escaping(extra_package: str) -> None:
    page = render_page(EVIL, [Section("plots", "Plots", "section_plots.html.j2", []),
                              Section("attack", "Attack <b>", "section_attack.html.j2", {"goal": EVIL, "n_steps": 3}),
                              Section("extra", "Hidden", "section_plots.html.j2", [], nav=False)],
                       subtitle=Markup("primary judge <code>{}</code>").format(EVIL), packages=(extra_package,))
    assert "<script" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert '<nav><a href="#plots">Plots</a><a href="#attack">Attack &lt;b&gt;</a></nav>' in page
    assert page.index('<h2 id="plots">') < page.index('<h2 id="attack">') < page.index('<h2 id="extra">')
    assert "<p>3 steps</p>" in page
    assert page.count('<p class="empty">Nothing to plot.</p>') == 3  # the extra partial includes the report's
    assert "<code>&lt;script&gt;" in page  # Markup subtitle: its own tags kept, its arguments escaped
    assert "details.sample > summary" in page  # the stylesheet is inlined verbatim


def test_bad_sections_are_errors(extra_package: str) -> None:
    with pytest.raises(ValueError, match="unique"):
        render_page("t", [Section("a", "A", "section_plots.html.j2", []), Section("a", "B", "section_plots.html.j2")])
    with pytest.raises(UndefinedError):  # a typo in a template's data is an error, not an empty cell
        render_page("t", [Section("attack", "Attack", "section_attack.html.j2", {"goal": "g"})],
                    packages=(extra_package,))
    with pytest.raises(TemplateNotFound):  # another package's partial is found only when it is named
        render_page("t", [Section("attack", "Attack", "section_attack.html.j2", {"goal": "g", "n_steps": 1})])


def test_sample_view_escapes_in_attributes() -> None:
    sample = {"prompt_id": "p<1>", "sample_index": 0, "prompt": EVIL * 20, "thinking": "  \n", "answer": EVIL,
              "split_status": "no_thinking",
              "judgments": {"j": {"answer": {"unsafe": None, "error": 'bad "quote" <x>'},
                                  "full": {"unsafe": True, "score": 0.5}}}}
    view = sample_view(sample, "j")
    assert view["score"] == "0.50" and view["unsafe_parts"] == ["full"]
    assert len(view["prompt_line"]) == 161 and view["prompt_line"].endswith("…")
    assert view["texts"][1]["text"] is None and "no_thinking" in view["texts"][1]["empty"]
    assert badges(None) == [{"cls": "b-meta", "text": "—", "title": ""}]
    page = render_page("t", [Section("samples", "Worst samples", "section_samples.html.j2",
                                     {"judge": "j", "runs": [{"label": "r", "n_shown": 1, "total": 1, "n_samples": 1,
                                                              "samples": [view]}]})])
    assert 'title="bad &#34;quote&#34; &lt;x&gt;"' in page and "<script" not in page
    assert '<span class="pid">p&lt;1&gt; #0</span>' in page
    assert page.count('<details class="sample">') == 1
