"""extract-html boilerplate rules: runs of short blocks dropped, pop-up widgets and script anchors skipped, while
prose (links included), code, formulas, tables and the title always stay."""

from __future__ import annotations

import pytest

pytest.importorskip("resiliparse")

from openmimo.data.extract_html import SHORT_RUN, SHORT_WORDS, _drop_short_runs, extract_html  # noqa: E402

PROSE_A = ("The first paragraph of the article explains the idea in plain words, long enough to read as the "
           "page's main text.")
PROSE_B = ("The second paragraph goes on with the argument and ends the article, again with enough words to be "
           "prose.")


def page(body: str, head: str = "", top: str = "") -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>T</title>{head}</head><body><main><article>"
            f"{top}<p>{PROSE_A}</p>{body}<p>{PROSE_B}</p></article></main></body></html>")


def text_of(body: str, head: str = "", top: str = "") -> str:
    return extract_html(page(body, head, top))["text"]


def items(words: list[str], tag: str = "div") -> str:
    return "".join(f"<{tag}>{w}</{tag}>" for w in words)


def test_constants_describe_the_rule():
    assert SHORT_WORDS == 8 and SHORT_RUN == 4


# ---- runs of short blocks ------------------------------------------------------------------------------------
def test_run_of_short_blocks_is_dropped():
    widget = f"<div class='x1'>{items(['Reply', 'Report', 'Quote', '3 votes', 'Share'])}</div>"
    assert text_of(widget) == f"{PROSE_A}\n\n{PROSE_B}"


def test_fewer_short_blocks_than_a_run_stay():
    assert text_of(items(["Thanks!", "Done.", "It works now."], "p")) == \
        f"{PROSE_A}\n\nThanks!\n\nDone.\n\nIt works now.\n\n{PROSE_B}"


def test_blank_lines_do_not_break_a_run():
    assert text_of(items(["Home", "Forums", "Members", "Help"], "p")) == f"{PROSE_A}\n\n{PROSE_B}"


def test_a_long_block_ends_a_run():
    body = items(["Home", "Forums", "Members"], "p") + f"<p>{PROSE_A}</p>" + items(["Help", "Search", "Login"], "p")
    assert text_of(body) == f"{PROSE_A}\n\nHome\n\nForums\n\nMembers\n\n{PROSE_A}\n\nHelp\n\nSearch\n\nLogin\n\n{PROSE_B}"


def test_seven_word_blocks_are_short_eight_word_blocks_are_not():
    seven = ["one two three four five six seven"] * 4
    eight = ["one two three four five six seven eight"] * 4
    assert text_of(items(seven, "p")) == f"{PROSE_A}\n\n{PROSE_B}"
    assert text_of(items(eight, "p")) == f"{PROSE_A}\n\n" + "\n\n".join(eight) + f"\n\n{PROSE_B}"


def test_cjk_characters_count_as_words():
    panel = items(["新手上路", "积分", "5", "楼主", "举报"])  # a forum user panel: short labels and counters
    sentence = "我们将带你从零开发一个项目并部署到线上。"  # one "word" for split(), 19 CJK characters
    assert text_of(panel) == f"{PROSE_A}\n\n{PROSE_B}"
    assert text_of(items([sentence] * 4, "p")) == f"{PROSE_A}\n\n" + "\n\n".join([sentence] * 4) + f"\n\n{PROSE_B}"


def test_prose_with_a_few_links_stays():
    para = ("<p>See <a href='/docs'>the documentation</a> and <a href='/faq'>the FAQ</a> for the details of the "
            "setup, or ask on <a href='/forum'>the forum</a>.</p>")
    assert text_of(para) == (f"{PROSE_A}\n\nSee the documentation and the FAQ for the details of the setup, or ask on "
                             f"the forum.\n\n{PROSE_B}")


def test_title_is_never_part_of_a_run():
    top = "<h1>Short title</h1>" + items(["By Ann", "3 May 2024", "5 min read", "Share"])
    assert text_of("", top=top) == f"# Short title\n\n{PROSE_A}\n\n{PROSE_B}"


def test_later_headings_count_as_short_blocks():
    body = items(["Tools", "Demos", "Links"], "h2") + items(["Export"])
    assert text_of(body, top="<h1>Title</h1>") == f"# Title\n\n{PROSE_A}\n\n{PROSE_B}"


# ---- what the short-run rule never removes --------------------------------------------------------------------
def test_code_block_of_short_lines_stays():
    code = "def f(x):\n    if x:\n        return 1\n    return 0\nprint(f(2))"
    body = items(["Reply", "Quote"]) + f"<pre><code class='language-python'>{code}</code></pre>" + items(["Share", "Edit"])
    assert text_of(body) == f"{PROSE_A}\n\nReply\nQuote\n\n```python\n{code}\n```\n\nShare\nEdit\n\n{PROSE_B}"


def test_blank_lines_inside_code_after_a_dropped_run_stay():
    code = "a = 1\n\n\nb = 2"
    body = items(["Reply", "Quote", "Share", "Edit"]) + f"<pre>{code}</pre>"
    assert text_of(body) == f"{PROSE_A}\n\n```\n{code}\n```\n\n{PROSE_B}"


def test_short_formula_lines_stay():
    steps = "".join(f"<p>Then <script type='math/tex'>x_{i} = {i}</script>.</p>" for i in range(5))
    head = "<script src='https://cdn.example.org/mathjax/MathJax.js'></script>"
    out = text_of(steps, head)
    assert out == f"{PROSE_A}\n\n" + "\n\n".join(f"Then $x_{i} = {i}$." for i in range(5)) + f"\n\n{PROSE_B}"


def test_short_lines_with_page_tex_delimiters_stay():
    head = ("<script type='text/x-mathjax-config'>MathJax.Hub.Config({tex2jax: {inlineMath: [['\\\\(','\\\\)']]}});"
            "</script><script src='https://cdn.example.org/mathjax/MathJax.js'></script>")
    steps = "".join(f"<p>So \\(y = {i}\\).</p>" for i in range(4))
    assert text_of(steps, head) == f"{PROSE_A}\n\n" + "\n\n".join(f"So $y = {i}$." for i in range(4)) + f"\n\n{PROSE_B}"


def test_short_inline_code_lines_stay():
    body = "".join(f"<p><code>opt{i}</code> flag</p>" for i in range(5))
    assert text_of(body) == f"{PROSE_A}\n\n" + "\n\n".join(f"`opt{i}` flag" for i in range(5)) + f"\n\n{PROSE_B}"


def test_table_of_short_rows_stays():
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in [("a", 1), ("b", 2), ("c", 3), ("d", 4)])
    out = text_of(f"<table><tr><th>key</th><th>value</th></tr>{rows}</table>")
    assert out == f"{PROSE_A}\n\n| key | value |\n|---|---|\n| a | 1 |\n| b | 2 |\n| c | 3 |\n| d | 4 |\n\n{PROSE_B}"


def test_drop_short_runs_on_lines():
    lines = ["# T", "a", "b", "", "c", "d", "long enough line with eight words in it", "x", "```", "y", "z", "```"]
    fixed = [False] * 8 + [True] * 4
    assert _drop_short_runs(lines, fixed) == ["# T", "long enough line with eight words in it", "x", "```", "y", "z",
                                              "```"]
    assert _drop_short_runs(["a", "b", "c"], [False] * 3) == ["a", "b", "c"]


def test_a_list_of_short_items_between_prose_stays():
    steps = ["Add the two numbers.", "Carry the one.", "Write the digit.", "Check the sum."]
    body = "<ol>" + "".join(f"<li>{t}</li>" for t in steps) + "</ol>"
    listed = "\n".join(f"{i}. {t}" for i, t in enumerate(steps, 1))
    assert text_of(body) == f"{PROSE_A}\n\n{listed}\n\n{PROSE_B}"


def test_a_list_of_short_items_at_the_edge_of_the_text_goes():
    menu = "<ul>" + "".join(f"<li>{t}</li>" for t in ["Home", "Forums", "Members", "Help"]) + "</ul>"
    html = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>T</title></head><body><main><article>"
            f"<p>{PROSE_A}</p><p>{PROSE_B}</p>{menu}</article></main></body></html>")
    assert extract_html(html)["text"] == f"{PROSE_A}\n\n{PROSE_B}"  # no prose after it: furniture


def test_list_in_prose_on_lines():
    long_line = "long enough line with eight words in it"
    items_ = ["- a", "- b", "- c", "- d"]
    assert _drop_short_runs([long_line, *items_, long_line], [False] * 6) == [long_line, *items_, long_line]
    assert _drop_short_runs([long_line, *items_], [False] * 5) == [long_line]  # nothing after it
    assert _drop_short_runs(["# T", *items_, long_line], [False] * 6) == ["# T", long_line]  # a heading before
    mixed = ["- a", "b", "- c", "- d"]  # not all list items
    assert _drop_short_runs([long_line, *mixed, long_line], [False] * 6) == [long_line, long_line]


# ---- pop-up widgets and script anchors -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["dropdown-menu", "s-popover", "tooltip", "jw-shortcuts-tooltip", "ant-dropdown-trigger"])
def test_popup_widgets_are_skipped(cls):
    widget = f"<div class='{cls}'><p>Share a link to this question, copy the link or follow it for news.</p></div>"
    assert text_of(widget) == f"{PROSE_A}\n\n{PROSE_B}"


def test_popup_class_on_the_article_keeps_the_article():
    html = (f"<html><body><main><article class='has-tooltip'><p>{PROSE_A}</p><p>{PROSE_B}</p></article></main>"
            f"</body></html>")
    assert extract_html(html)["text"] == f"{PROSE_A}\n\n{PROSE_B}"


def test_script_anchor_is_skipped_real_link_stays():
    para = ("<p>Read <a href='/next'>the next part</a> of this series when it is out next week "
            "<a href='javascript:void(0)'>Report</a></p>")
    assert text_of(para) == f"{PROSE_A}\n\nRead the next part of this series when it is out next week\n\n{PROSE_B}"
