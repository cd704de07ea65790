"""General prose and HTML web pages of the tiny world.

:func:`prose` writes a short article from sentence templates and word lists (the stage-1 "web" text).
:func:`pages` wraps prose, math and code records in HTML the way the web does — MathJax
(``\\(..\\)``, ``$$..$$``, ``<script type="math/tex">``), KaTeX (``<span class="katex">`` with a TeX
annotation), MathML (``<math>``), ``<pre><code>`` blocks, forum Q&A threads, boilerplate (navigation,
ads, cookie banners, footers) — plus exact duplicates, near duplicates and spam.  Every page carries
its ground truth: ``kind`` (article / forum / spam), ``main_text`` (what a perfect extractor keeps:
the content text, math as TeX in ``$..$``, code verbatim; empty for spam), ``has_math``,
``has_code``, ``math_markup``, ``duplicate_of`` (URL of the page it copies exactly) and
``near_duplicate_of`` (URL of the page it repeats with different boilerplate and small edits).
"""

from __future__ import annotations

import html
import random
import re

TOPICS = {
    "gardening": (["tomatoes", "roses", "the soil", "seedlings", "compost", "the herb bed"],
                  ["water", "prune", "plant", "feed", "cover", "check"]),
    "cooking": (["the dough", "a soup", "fresh bread", "the sauce", "rice", "roasted vegetables"],
                ["stir", "bake", "season", "simmer", "taste", "slice"]),
    "astronomy": (["the moon", "a comet", "Jupiter", "the night sky", "a telescope", "distant stars"],
                  ["observe", "track", "photograph", "map", "study", "measure"]),
    "travel": (["the old town", "a mountain trail", "the harbor", "a quiet village", "the museum", "the night train"],
               ["visit", "explore", "photograph", "walk through", "book", "recommend"]),
    "history": (["the ancient city", "an old map", "the river trade", "a stone bridge", "the first library",
                 "a royal letter"], ["describe", "rebuild", "study", "discover", "record", "preserve"]),
    "computing": (["a small program", "the database", "an old laptop", "the network", "a text editor", "the compiler"],
                  ["debug", "install", "test", "update", "configure", "benchmark"]),
}
ADJ = ["quiet", "bright", "careful", "simple", "early", "patient", "surprising", "useful", "warm", "steady", "curious",
       "rare"]
PEOPLE = ["my neighbor", "a friend", "the local club", "our teacher", "an old guide", "the author", "a reader",
          "my grandmother"]
TIMES = ["in the morning", "after lunch", "every weekend", "last spring", "during the winter", "on rainy days",
         "before sunrise", "in late autumn"]
TEMPLATES = [
    "{Person} likes to {verb} {thing} {time}.",
    "It is {adj} to {verb} {thing} {time}, and {person} agrees.",
    "When you {verb} {thing}, take a {adj} approach and be patient.",
    "{Time}, {person} decided to {verb} {thing} with a {adj} plan.",
    "Many people ask how to {verb} {thing}; the answer is to start {adj} and small.",
    "The best advice about {thing} came from {person}: {verb} it {time}.",
    "A {adj} habit helps: {verb} {thing} and write down what you notice.",
    "{Person} once said that {thing} is more {adj} than it looks.",
]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def prose(rng: random.Random) -> tuple[str, str]:
    """``(title, text)`` of a short article: 2-4 paragraphs of 3-6 templated sentences on one topic."""
    topic = rng.choice(sorted(TOPICS))
    things, verbs = TOPICS[topic]
    paras = []
    for _ in range(rng.randint(2, 4)):
        sents = []
        for _ in range(rng.randint(3, 6)):
            person, time = rng.choice(PEOPLE), rng.choice(TIMES)
            sents.append(rng.choice(TEMPLATES).format(
                person=person, Person=_cap(person), verb=rng.choice(verbs), thing=rng.choice(things),
                adj=rng.choice(ADJ), time=time, Time=_cap(time)))
        paras.append(" ".join(sents))
    title = f"{_cap(rng.choice(ADJ))} notes on {topic}: {rng.choice(things)}"
    return title, "\n\n".join(paras)


# ---- math markup -------------------------------------------------------------------------------
_EXPR = re.compile(r"(\(?-?\d+[\d\s+\-*x()]*=\s*-?\d+|\(?-?\d+\)?(?:\s*[+\-*]\s*\(?-?\d+\)?)+)")


def _tex(expr: str) -> str:
    return expr.replace("*", "\\times").strip()


def _mathml(tex: str) -> str:
    boxed = re.fullmatch(r"\\boxed\{(-?\d+)\}", tex)
    if boxed:
        return (f'<math xmlns="http://www.w3.org/1998/Math/MathML"><menclose notation="box"><mn>{boxed[1]}</mn>'
                '</menclose></math>')
    parts = re.findall(r"\d+|\\times|[a-z]|[+\-=()]", tex)
    inner = "".join(f"<mn>{p}</mn>" if p.isdigit() else f"<mi>{p}</mi>" if p.isalpha()
                    else f"<mo>{'&#xD7;' if p == chr(92) + 'times' else html.escape(p)}</mo>" for p in parts)
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML"><mrow>{inner}</mrow></math>'


def _glyphs(tex: str) -> str:
    """Roughly what a renderer shows for ``tex`` (KaTeX's visible HTML layer)."""
    return re.sub(r"\\boxed\{(.*?)\}", r"[\1]", tex).replace("\\times", "×").replace(" ", "")


def _math_html(tex: str, markup: str, display: bool, rng: random.Random) -> str:
    if markup == "mathjax":
        if display:
            return rng.choice([f"$${tex}$$", f'<script type="math/tex; mode=display">{tex}</script>'])
        return rng.choice([f"\\({tex}\\)", f'<script type="math/tex">{tex}</script>'])
    if markup == "katex":
        return (f'<span class="katex"><span class="katex-mathml"><math><semantics><mrow></mrow>'
                f'<annotation encoding="application/x-tex">{html.escape(tex)}</annotation></semantics></math></span>'
                f'<span class="katex-html" aria-hidden="true">{html.escape(_glyphs(tex))}</span></span>')
    return _mathml(tex)


def _render_math_line(line: str, markup: str, rng: random.Random) -> tuple[str, str]:
    """One solution line as ``(html, ground-truth text)``; arithmetic becomes math markup / ``$tex$``."""
    line = re.sub(r"\\boxed\{(-?\d+)\}", r"\1", line)
    out_h, out_t, pos = [], [], 0
    for m in _EXPR.finditer(line):
        out_h.append(html.escape(line[pos:m.start()]))
        out_t.append(line[pos:m.start()])
        tex = _tex(m.group(0))
        out_h.append(_math_html(tex, markup, False, rng))
        out_t.append(f"${tex}$")
        pos = m.end()
    out_h.append(html.escape(line[pos:]))
    out_t.append(line[pos:])
    return "".join(out_h), "".join(out_t)


# ---- page furniture ----------------------------------------------------------------------------
SITES = ["mathcorner.example", "learnwithleo.example", "codenotes.example", "dailyfacts.example", "qa-forum.example"]
SPAM_WORDS = ["cheap", "best price", "casino", "free bonus", "click now", "winner", "limited offer", "pills",
              "crypto profit", "miracle"]


def _boilerplate(rng: random.Random, site: str) -> tuple[str, str]:
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in rng.sample(
        ["Home", "About", "Blog", "Topics", "Contact", "Archive", "Login", "Shop"], 5))
    head = f'<header><nav class="menu"><ul>{nav}</ul></nav></header>'
    if rng.random() < 0.6:
        head = ('<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience. '
                '<button>Accept all</button> <button>Settings</button></div>') + head
    ad = (f'<aside class="ad"><a href="https://ads.example/{rng.randint(1000, 9999)}">'
          f'{rng.choice(["Buy now", "Sponsored", "Try our app", "Win a prize"])}: '
          f'{rng.choice(SPAM_WORDS)}!</a></aside>')
    foot = (f'<footer><p>&copy; {rng.randint(2005, 2024)} {site}. All rights reserved.</p>'
            '<a href="/privacy">Privacy</a> | <a href="/terms">Terms</a></footer>')
    return head + ad, foot


def render_page(title: str, body: str, rng: random.Random, site: str, mathjax: bool, katex: bool) -> str:
    scripts = ""
    if mathjax:
        scripts += '<script src="https://cdn.example/mathjax/tex-chtml.js" async></script>'
    if katex:
        scripts += '<link rel="stylesheet" href="https://cdn.example/katex/katex.min.css">'
    top, foot = _boilerplate(rng, site)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{scripts}</head>'
            f'<body>{top}<main><article><h1>{html.escape(title)}</h1>{body}</article></main>{foot}</body></html>')


def solution_html(rec: dict, rng: random.Random, markup: str) -> tuple[str, str]:
    """The worked solution of a math record as ``(html, ground-truth text)``, final answer in display math."""
    body_h, body_t = [], []
    for line in rec["solution"].split("\n"):
        h, t = _render_math_line(line, markup, rng)
        body_h.append(f"<p>{h}</p>")
        body_t.append(t)
    ans = str(rec["answer"])
    body_h.append("<p>Final answer: " + _math_html(f"\\boxed{{{ans}}}", markup, True, rng) + "</p>")
    body_t.append(f"Final answer: $$\\boxed{{{ans}}}$$")
    return "".join(body_h), "\n".join(body_t)


def problem_html(rec: dict, rng: random.Random, markup: str) -> tuple[str, str]:
    h, t = _render_math_line(rec["problem"], markup, rng)
    return f"<p>{h}</p>", t


def math_page(rec: dict, rng: random.Random, markup: str) -> tuple[str, str, str]:
    """An article showing a worked math problem: ``(title, html body, main_text)``."""
    title = f"Worked example: {rec['problem'][:60]}"
    ph, pt = problem_html(rec, rng, markup)
    sh, st = solution_html(rec, rng, markup)
    return title, f"<p><strong>Problem.</strong></p>{ph}{sh}", "\n".join([title, "Problem.", pt, st])


def code_page(rec: dict, rng: random.Random) -> tuple[str, str, str]:
    title = f"Solving {rec['question_title']} in Python"
    statement = rec["question_content"].split("\n\n")[0]
    code = rec["solution"]
    body = (f"<p>{html.escape(statement)}</p><p>Here is a complete solution:</p>"
            f'<pre><code class="language-python">{html.escape(code)}</code></pre>')
    return title, body, "\n".join([title, statement, "Here is a complete solution:", code.rstrip("\n")])


def prose_page(rng: random.Random) -> tuple[str, str, str]:
    title, text = prose(rng)
    body = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n"))
    return title, body, title + "\n" + text.replace("\n\n", "\n")


def forum_page(rec: dict, rng: random.Random, markup: str) -> tuple[str, str, str]:
    """A Q&A thread on a math record: the question post and an accepted answer, each with user and votes."""
    qt = f"How do I solve this? {rec['problem'][:50]}"
    qh, qtext = problem_html(rec, rng, markup)
    ah, atext = solution_html(rec, rng, markup)
    users = rng.sample(["curious_cat", "mathfan42", "dev_ana", "prof_k", "lurker", "n00b", "stack_sam"], 2)
    body = (f'<div class="question" data-votes="{rng.randint(0, 40)}"><div class="post-body">{qh}</div>'
            f'<div class="user">asked by {users[0]}</div></div>'
            f'<div class="answers"><div class="answer accepted" data-votes="{rng.randint(1, 90)}">'
            f'<div class="post-body">{ah}</div><div class="user">answered by {users[1]}</div></div></div>'
            '<div class="related"><h3>Related questions</h3><ul><li><a href="/q/1">How do I start?</a></li></ul></div>')
    return qt, body, "\n".join([qt, qtext, atext])


def spam_page(rng: random.Random) -> tuple[str, str, str]:
    words = [rng.choice(SPAM_WORDS) for _ in range(rng.randint(40, 90))]
    links = "".join(f'<a href="https://spam.example/{rng.randint(1, 10 ** 6)}">{w}</a> ' for w in words[:15])
    title = f"{_cap(rng.choice(SPAM_WORDS))} {rng.choice(SPAM_WORDS)} {rng.randint(100, 999)}!!!"
    return title, f"<p>{' '.join(words).upper()}</p><div>{links}</div>", ""


def near_duplicate(html_doc: str, rng: random.Random, site: str) -> str:
    """The same content with different boilerplate and a small edit (a changed date line)."""
    main = html_doc[html_doc.index("<main>"):html_doc.index("</main>") + len("</main>")]
    title = re.search(r"<title>(.*?)</title>", html_doc).group(1)
    top, foot = _boilerplate(rng, site)
    stamp = f'<p class="updated">Updated {rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(2015, 2024)}</p>'
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body>{top}{stamp}{main}{foot}</body></html>")
