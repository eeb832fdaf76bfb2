"""The Markdown subset to HTML: structure, and that nothing from the text becomes markup it should not."""

from reports.markdown import escape, to_html


def test_blocks_and_inline():
    md = ("# Title\n\nSome **bold** and `code`.\n\n- one\n- two\n\n> quoted\n\n"
          "| a | b |\n|---|---|\n| 1 \\| 2 | [x](https://e.org/#/r) |\n")
    html = to_html(md, lambda s: s)
    assert '<h1 id="title">Title</h1>' in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html and "<blockquote><p>quoted</p></blockquote>" in html
    assert "<td>1 | 2</td>" in html and '<a href="https://e.org/#/r">x</a>' in html


def test_escaping_keeps_entities_and_refuses_markup():
    assert escape("a < b & c &lt;d&gt; &#39;") == "a &lt; b &amp; c &lt;d&gt; &#39;"
    html = to_html("<script>alert(1)</script> &lt;img onerror=x&gt; [click](javascript:alert(1))", lambda s: s)
    assert "<script" not in html and "<img" not in html and "href" not in html and "&lt;script&gt;" in html


def test_images_go_through_the_source_callback():
    html = to_html("![a \"q\"](figures/f.png)\n", lambda s: "data:image/png;base64,AAAA")
    assert html == '<figure><img alt="a &quot;q&quot;" src="data:image/png;base64,AAAA"></figure>'
