//! Configuration files as read from disk: their path relative to the configuration root, their
//! text, and byte offset → line:column conversion for diagnostics.

use std::ops::Range;
use std::sync::Arc;

use crate::diagnostic::Location;

/// One configuration file's text, named by its path relative to the configuration root.
#[derive(Debug)]
pub(crate) struct SourceFile {
    rel: Arc<str>,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps a file's text; `rel` uses `/` separators and is relative to the configuration root.
    pub(crate) fn new(rel: impl Into<Arc<str>>, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            rel: rel.into(),
            text,
            line_starts,
        }
    }

    /// The file's text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_column(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        // A span may point into the middle of a multi-byte character after lossy recovery; count
        // characters up to the nearest boundary at or before the offset.
        let mut end = offset;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let column = self.text[start..end].chars().count() + 1;
        (to_u32(line + 1), to_u32(column))
    }

    /// The location of a byte range (its start).
    pub(crate) fn location(&self, span: &Range<usize>) -> Location {
        let (line, column) = self.line_column(span.start);
        Location::File {
            file: self.rel.to_string(),
            line,
            column,
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_character_columns() {
        let file = SourceFile::new("a.toml", "ab\nc\u{e9}d = 1\n\nx".to_owned());
        assert_eq!(file.line_column(0), (1, 1));
        assert_eq!(file.line_column(1), (1, 2));
        assert_eq!(file.line_column(3), (2, 1));
        // `é` is two bytes; `d` is the third character of line 2.
        assert_eq!(file.line_column(6), (2, 3));
        assert_eq!(file.line_column(12), (3, 1));
        assert_eq!(file.line_column(13), (4, 1));
        assert_eq!(file.line_column(999), (4, 2));
    }
}
