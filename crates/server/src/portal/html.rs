//! A small HTML builder that escapes by construction: markup can only come
//! from `&'static str` literals written in this crate ([`Html::raw`]), and
//! every other value goes through [`Html::text`], which escapes it for both
//! element content and quoted attribute values. No user-provided string can
//! reach the page unescaped, because there is no method that takes one raw.
//!
//! Chosen over askama: the pages are few, a compile-time template engine
//! adds a proc-macro crate and its parser to every cold build, and the one
//! property that matters (user text is escaped) is held here by the types.

use std::fmt::{self, Write};

/// An HTML document or fragment under construction.
#[derive(Default)]
pub struct Html {
    buf: String,
}

impl Html {
    pub fn new() -> Self {
        Html { buf: String::with_capacity(8 * 1024) }
    }

    /// Markup written in this crate: only literals qualify.
    pub fn raw(&mut self, markup: &'static str) -> &mut Self {
        self.buf.push_str(markup);
        self
    }

    /// Any value, escaped (`& < > " '`): safe inside elements and inside
    /// double- or single-quoted attribute values.
    pub fn text(&mut self, value: impl fmt::Display) -> &mut Self {
        let mut escaper = Escaper { out: &mut self.buf };
        // Writing into a String can't fail.
        let _ = write!(escaper, "{value}");
        self
    }

    /// `open`, then `value` escaped, then `close`.
    pub fn wrap(&mut self, open: &'static str, value: impl fmt::Display, close: &'static str) -> &mut Self {
        self.raw(open).text(value).raw(close)
    }

    /// Appends a fragment built separately (already safe by construction).
    pub fn append(&mut self, other: Html) -> &mut Self {
        self.buf.push_str(&other.buf);
        self
    }

    pub fn into_string(self) -> String {
        self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

struct Escaper<'a> {
    out: &'a mut String,
}

impl Write for Escaper<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '&' => self.out.push_str("&amp;"),
                '<' => self.out.push_str("&lt;"),
                '>' => self.out.push_str("&gt;"),
                '"' => self.out.push_str("&quot;"),
                '\'' => self.out.push_str("&#39;"),
                c => self.out.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_elements_and_attributes() {
        let mut h = Html::new();
        h.raw("<p title=\"").text("\"><script>x</script>").raw("\">").text("Tom & 'Jerry' <b>").raw("</p>");
        assert_eq!(
            h.into_string(),
            "<p title=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\">Tom &amp; &#39;Jerry&#39; &lt;b&gt;</p>"
        );
    }

    #[test]
    fn numbers_and_other_displays_pass_through_the_escaper() {
        let mut h = Html::new();
        h.wrap("<td>", 42, "</td>");
        assert_eq!(h.into_string(), "<td>42</td>");
    }
}
