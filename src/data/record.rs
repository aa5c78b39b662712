//! The sample record: one JSON object per line, shared by every tool.
//!
//! ```json
//! {"image": "bottle/test/broken_large/000.png", "class": "bottle",
//!  "label": 1, "mask": "bottle/ground_truth/broken_large/000_mask.png"}
//! ```
//!
//! Only `image` is required. `class` defaults to no class, `label` (0 normal,
//! 1 anomalous) to unknown, `mask` to none. Any other field is kept as it is
//! and passed on by every tool, so `dinomaly-score` output can be joined back
//! to whatever produced its input. A line that is not a JSON object is read
//! as a plain image path.

use std::io::BufRead;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One input sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Image path.
    pub image: PathBuf,
    /// Class (product category) name; used for per-class models and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// 0 normal, 1 anomalous, absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u8>,
    /// Ground-truth mask path; null or absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<PathBuf>,
    /// Every other field of the input line, kept in order.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Sample {
    /// A sample with only an image path.
    pub fn from_path(image: impl Into<PathBuf>) -> Self {
        Sample { image: image.into(), class: None, label: None, mask: None, extra: serde_json::Map::new() }
    }

    /// The record as a JSON object (for adding output fields).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// The class name, or "" when the sample has none.
    pub fn class_name(&self) -> &str {
        self.class.as_deref().unwrap_or("")
    }
}

/// Parses one input line: a JSON object with an `image` field, or a path.
/// `source_name` and `line_no` (1-based) go into the error message.
pub fn parse_line(text: &str, source_name: &str, line_no: usize) -> Result<Option<Sample>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if !trimmed.starts_with('{') {
        return Ok(Some(Sample::from_path(trimmed)));
    }
    let record_err = |reason: String| Error::Record { source_name: source_name.to_string(), line: line_no, reason };
    let value: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| record_err(format!("not valid JSON: {e}")))?;
    if value.get("image").and_then(|v| v.as_str()).is_none() {
        return Err(record_err("the record has no \"image\" field with a path".to_string()));
    }
    if let Some(label) = value.get("label") {
        if !label.is_null() && label.as_u64().filter(|&l| l <= 1).is_none() {
            return Err(record_err(format!("\"label\" must be 0 or 1, not {label}")));
        }
    }
    let mut sample: Sample = serde_json::from_value(value).map_err(|e| record_err(e.to_string()))?;
    // `"mask": null` deserializes to None already; an empty string means none too.
    if sample.mask.as_ref().is_some_and(|m| m.as_os_str().is_empty()) {
        sample.mask = None;
    }
    Ok(Some(sample))
}

/// Reads all samples from `reader`, reporting the first bad line.
pub fn read_all(reader: impl BufRead, source_name: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in lines(reader, source_name) {
        let (line_no, line) = line?;
        if let Some(s) = parse_line(&line, source_name, line_no)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The text lines of an input stream with their 1-based numbers, as every
/// tool reads its JSON lines: a UTF-8 byte-order mark before line 1 is
/// skipped (editors on Windows write one), `\n` and `\r\n` both end a
/// line, and bytes that are not UTF-8 are an error naming the line and
/// the byte, not the stream.
pub fn lines<R: BufRead>(reader: R, source_name: &str) -> Lines<R> {
    Lines { reader, source_name: source_name.to_string(), line_no: 0, buf: Vec::new() }
}

/// The iterator of [`lines`].
pub struct Lines<R> {
    reader: R,
    source_name: String,
    line_no: usize,
    buf: Vec<u8>,
}

/// UTF-8's encoding of U+FEFF.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<(usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(Error::io(&self.source_name, e))),
        }
        self.line_no += 1;
        let mut bytes = &self.buf[..];
        if self.line_no == 1 {
            bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        Some(match std::str::from_utf8(bytes) {
            Ok(text) => Ok((self.line_no, text.to_string())),
            Err(e) => {
                let at = e.valid_up_to();
                Err(Error::Record {
                    source_name: self.source_name.clone(),
                    line: self.line_no,
                    reason: format!(
                        "not UTF-8 text (byte 0x{:02x} at column {}); input lines must be UTF-8",
                        bytes[at],
                        at + 1
                    ),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_path_and_json_lines() {
        let s = parse_line("a/b.png", "stdin", 1).unwrap().unwrap();
        assert_eq!(s.image, PathBuf::from("a/b.png"));
        let s =
            parse_line(r#"{"image":"x.png","class":"c","label":1,"mask":null,"id":7}"#, "stdin", 2).unwrap().unwrap();
        assert_eq!(s.class.as_deref(), Some("c"));
        assert_eq!(s.label, Some(1));
        assert_eq!(s.mask, None);
        assert_eq!(s.extra["id"], 7);
        assert!(parse_line("   ", "stdin", 3).unwrap().is_none());
    }

    #[test]
    fn lines_skip_a_bom_and_name_a_line_that_is_not_utf8() {
        let read = |bytes: &[u8]| -> Vec<Result<(usize, String)>> { lines(bytes, "in.jsonl").collect() };
        let got: Vec<(usize, String)> = read(b"\xEF\xBB\xBFa.png\r\n\nb.png").into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, [(1, "a.png".to_string()), (2, String::new()), (3, "b.png".to_string())]);
        // Only before line 1: elsewhere U+FEFF is the line's text.
        let got = read(b"a\n\xEF\xBB\xBFb\n");
        assert_eq!(got[1].as_ref().unwrap().1, "\u{feff}b");
        let got = read(b"ok.png\n{\"image\": \"caf\xe9.png\"}\nnext.png\n");
        assert_eq!(got[0].as_ref().unwrap().1, "ok.png");
        assert_eq!(
            got[1].as_ref().unwrap_err().to_string(),
            "in.jsonl:2: not UTF-8 text (byte 0xe9 at column 15); input lines must be UTF-8"
        );
        // A record after a BOM is a record, not a path starting with U+FEFF.
        let samples = read_all(&b"\xEF\xBB\xBF{\"image\": \"x.png\", \"class\": \"c\"}\n"[..], "stdin").unwrap();
        assert_eq!(samples[0].image, PathBuf::from("x.png"));
        assert_eq!(samples[0].class.as_deref(), Some("c"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse_line("{\"image\": 3}", "in.jsonl", 4).unwrap_err();
        assert_eq!(e.to_string(), "in.jsonl:4: the record has no \"image\" field with a path");
        let e = parse_line("{oops", "stdin", 9).unwrap_err().to_string();
        assert!(e.starts_with("stdin:9: not valid JSON"), "{e}");
        let e = parse_line(r#"{"image":"a","label":2}"#, "stdin", 1).unwrap_err();
        assert!(e.to_string().contains("\"label\" must be 0 or 1"));
    }
}
