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
        Sample {
            image: image.into(),
            class: None,
            label: None,
            mask: None,
            extra: serde_json::Map::new(),
        }
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
    let record_err = |reason: String| Error::Record {
        source_name: source_name.to_string(),
        line: line_no,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| record_err(format!("not valid JSON: {e}")))?;
    if value.get("image").and_then(|v| v.as_str()).is_none() {
        return Err(record_err(
            "the record has no \"image\" field with a path".to_string(),
        ));
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
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io(source_name, e))?;
        if let Some(s) = parse_line(&line, source_name, i + 1)? {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_path_and_json_lines() {
        let s = parse_line("a/b.png", "stdin", 1).unwrap().unwrap();
        assert_eq!(s.image, PathBuf::from("a/b.png"));
        let s = parse_line(
            r#"{"image":"x.png","class":"c","label":1,"mask":null,"id":7}"#,
            "stdin",
            2,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.class.as_deref(), Some("c"));
        assert_eq!(s.label, Some(1));
        assert_eq!(s.mask, None);
        assert_eq!(s.extra["id"], 7);
        assert!(parse_line("   ", "stdin", 3).unwrap().is_none());
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse_line("{\"image\": 3}", "in.jsonl", 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "in.jsonl:4: the record has no \"image\" field with a path"
        );
        let e = parse_line("{oops", "stdin", 9).unwrap_err().to_string();
        assert!(e.starts_with("stdin:9: not valid JSON"), "{e}");
        let e = parse_line(r#"{"image":"a","label":2}"#, "stdin", 1).unwrap_err();
        assert!(e.to_string().contains("\"label\" must be 0 or 1"));
    }
}
