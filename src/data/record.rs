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
//!
//! `dinomaly-score` adds the fields of [`Scored`] to each sample it writes
//! (`score`, `model`, `map`, `map_geometry`, the calibrated decision, or
//! `error`); `dinomaly-metrics`, `dinomaly-calibrate` and
//! `dinomaly-score --skip-existing` read them back with
//! [`parse_scored_line`]. The JSON names are fixed by serde renames, so
//! renaming a Rust field cannot change the format.

use std::io::BufRead;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::map_geometry::MapGeometry;
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

/// The fields `dinomaly-score` adds to a sample, declared in the order it
/// writes them: the defect regions, the map and its geometry, the score and
/// the model id, the decision; or only `error` for an image that failed to
/// score. Absent fields are not written; `null` reads as absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Defect regions above the pixel threshold, strongest first (objects
    /// with `bbox`, `area`, `peak`; see `score::regions`).
    #[serde(rename = "regions", default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<serde_json::Value>>,
    /// How many regions `--max-regions` left out.
    #[serde(rename = "regions_omitted", default, skip_serializing_if = "Option::is_none")]
    pub regions_omitted: Option<usize>,
    /// The anomaly map's `.npy` path.
    #[serde(rename = "map", default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// The space of the map: `crop` or `photo`.
    #[serde(rename = "map_space", default, skip_serializing_if = "Option::is_none")]
    pub map_space: Option<String>,
    /// The pre-processing the map was made under.
    #[serde(rename = "map_geometry", default, skip_serializing_if = "Option::is_none")]
    pub map_geometry: Option<MapGeometry>,
    /// The image score: the scorer's float32 widened to f64, written as
    /// that f64 (`0.1f32` is `0.10000000149011612`), as serde_json always
    /// wrote it. A value that is not a number (`null` for a NaN score)
    /// reads as no score: the readers say what was written.
    #[serde(rename = "score", default, skip_serializing_if = "Option::is_none", deserialize_with = "number_or_none")]
    pub score: Option<f64>,
    /// The id of the model that scored the image (`score::model_id`).
    #[serde(rename = "model", default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// score > threshold (with `--threshold` or a calibrated checkpoint).
    #[serde(rename = "anomalous", default, skip_serializing_if = "Option::is_none")]
    pub anomalous: Option<bool>,
    /// The calibrated threshold the decision used.
    #[serde(rename = "threshold", default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The score normalised so that the threshold is 0.5 (calibration).
    #[serde(rename = "normalized_score", default, skip_serializing_if = "Option::is_none")]
    pub normalized_score: Option<f64>,
    /// Why the image could not be scored (then no other field is set).
    #[serde(rename = "error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The JSON names of [`Scored`]'s fields in output order.
pub const SCORED_FIELDS: [&str; 11] = [
    "regions",
    "regions_omitted",
    "map",
    "map_space",
    "map_geometry",
    "score",
    "model",
    "anomalous",
    "threshold",
    "normalized_score",
    "error",
];

/// Any JSON value: a number as f64, anything else as none.
fn number_or_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<f64>, D::Error> {
    Ok(serde_json::Value::deserialize(deserializer)?.as_f64())
}

impl Scored {
    /// Adds the set fields to `record` (a sample's JSON object) in
    /// declaration order. A field the input line already had keeps its
    /// place and gets the new value, as rescoring a scored file always did.
    pub fn add_to(&self, record: &mut serde_json::Map<String, serde_json::Value>) {
        // Serializing plain options, strings and numbers cannot fail.
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self) {
            for (key, value) in fields {
                record.insert(key, value);
            }
        }
    }

    /// The scored fields of a JSON object; an error names the first field
    /// of the wrong type.
    pub fn from_object(object: &serde_json::Map<String, serde_json::Value>) -> std::result::Result<Self, String> {
        let known = |keys: &[&str]| -> serde_json::Value {
            keys.iter().filter_map(|k| object.get(*k).map(|v| ((*k).to_string(), v.clone()))).collect()
        };
        serde_json::from_value(known(&SCORED_FIELDS)).map_err(|whole| {
            // serde_json does not say which field failed: try them one by one.
            SCORED_FIELDS
                .iter()
                .find_map(|k| {
                    serde_json::from_value::<Scored>(known(&[k])).err().map(|e| {
                        let e = e.to_string();
                        // MapGeometry's own messages name the field already.
                        if e.starts_with(&format!("\"{k}\"")) {
                            e
                        } else {
                            format!("\"{k}\": {e}")
                        }
                    })
                })
                .unwrap_or_else(|| whole.to_string())
        })
    }
}

/// One line of `dinomaly-score`'s output: the sample (its `extra` still
/// holds every other field, the scored ones included, as read) and the
/// scored fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredRecord {
    pub sample: Sample,
    pub scored: Scored,
}

/// Parses one line of scored output: like [`parse_line`], but a plain path
/// is an error, and the scored fields must have their types.
pub fn parse_scored_line(text: &str, source_name: &str, line_no: usize) -> Result<Option<ScoredRecord>> {
    let record_err = |reason: String| Error::Record { source_name: source_name.to_string(), line: line_no, reason };
    let Some(sample) = parse_line(text, source_name, line_no)? else {
        return Ok(None);
    };
    if !text.trim_start().starts_with('{') {
        return Err(record_err("a plain path, not a scored JSON record (the output of dinomaly-score)".to_string()));
    }
    let scored = Scored::from_object(&sample.extra).map_err(record_err)?;
    Ok(Some(ScoredRecord { sample, scored }))
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

    fn full_scored() -> Scored {
        Scored {
            regions: Some(vec![serde_json::json!({"bbox": [1, 2, 3, 4], "area": 5, "peak": 0.5})]),
            regions_omitted: Some(2),
            map: Some("maps/a.npy".to_string()),
            map_space: Some("crop".to_string()),
            map_geometry: Some(MapGeometry { resize: (448, 448), crop: (392, 392) }),
            score: Some(f64::from(0.1f32)),
            model: Some("0123456789abcdef".to_string()),
            anomalous: Some(true),
            threshold: Some(0.25),
            normalized_score: Some(0.75),
            error: Some("unreadable".to_string()),
        }
    }

    #[test]
    fn scored_field_names_are_the_format() {
        // Serde renames fix the names: this table is the file format.
        let mut record = serde_json::Map::new();
        full_scored().add_to(&mut record);
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        assert_eq!(keys, SCORED_FIELDS);
        assert_eq!(
            SCORED_FIELDS,
            [
                "regions",
                "regions_omitted",
                "map",
                "map_space",
                "map_geometry",
                "score",
                "model",
                "anomalous",
                "threshold",
                "normalized_score",
                "error"
            ]
        );
        // Absent fields are not written.
        let mut record = serde_json::Map::new();
        Scored { score: Some(1.0), ..Scored::default() }.add_to(&mut record);
        assert_eq!(serde_json::Value::Object(record).to_string(), r#"{"score":1.0}"#);
    }

    #[test]
    fn scored_line_round_trips_in_order_keeping_other_fields() {
        let input = r#"{"image":"a.png","class":"c","label":1,"mask":"m.png","id":7,"score":9,"note":"x"}"#;
        let sample = parse_line(input, "in.jsonl", 1).unwrap().unwrap();
        let mut record = sample.to_json();
        full_scored().add_to(&mut record);
        let line = serde_json::Value::Object(record).to_string();
        // The sample's fields first, an input "score" replaced in place,
        // then the new fields in declaration order; the f32 score is
        // written widened to f64.
        assert_eq!(
            line,
            r#"{"image":"a.png","class":"c","label":1,"mask":"m.png","id":7,"score":0.10000000149011612,"note":"x","regions":[{"bbox":[1,2,3,4],"area":5,"peak":0.5}],"regions_omitted":2,"map":"maps/a.npy","map_space":"crop","map_geometry":{"resize":[448,448],"crop":[392,392]},"model":"0123456789abcdef","anomalous":true,"threshold":0.25,"normalized_score":0.75,"error":"unreadable"}"#
        );
        let back = parse_scored_line(&line, "out.jsonl", 1).unwrap().unwrap();
        assert_eq!(back.scored, full_scored());
        assert_eq!(back.sample.class.as_deref(), Some("c"));
        assert_eq!(back.sample.extra["note"], "x");
        assert!(parse_scored_line("  ", "out.jsonl", 2).unwrap().is_none());
        // null reads as absent.
        let back = parse_scored_line(r#"{"image":"a.png","score":null,"map":null}"#, "s", 1).unwrap().unwrap();
        assert_eq!(back.scored, Scored::default());
    }

    #[test]
    fn malformed_scored_lines_name_the_file_line_and_field() {
        let err = |text: &str| parse_scored_line(text, "scores.jsonl", 3).unwrap_err().to_string();
        assert_eq!(
            err("a.png"),
            "scores.jsonl:3: a plain path, not a scored JSON record (the output of dinomaly-score)"
        );
        let e = err(r#"{"image":"a.png","threshold":"high"}"#);
        assert!(e.starts_with("scores.jsonl:3: \"threshold\": invalid type: string"), "{e}");
        // A score that is not a number is no score; the tools say so.
        let line = parse_scored_line(r#"{"image":"a.png","score":"NaN"}"#, "s", 1).unwrap().unwrap();
        assert_eq!(line.scored.score, None);
        let e = err(r#"{"image":"a.png","score":0.5,"map":5}"#);
        assert!(e.starts_with("scores.jsonl:3: \"map\": invalid type: integer"), "{e}");
        let e = err(r#"{"image":"a.png","anomalous":"yes"}"#);
        assert!(e.starts_with("scores.jsonl:3: \"anomalous\": "), "{e}");
        let e = err(r#"{"image":"a.png","map_geometry":{"resize":[448],"crop":[392,392]}}"#);
        assert!(e.starts_with("scores.jsonl:3: \"map_geometry\" needs \"resize\""), "{e}");
        let e = err(r#"{"image":"a.png","score":1,"#);
        assert!(e.starts_with("scores.jsonl:3: not valid JSON"), "{e}");
    }
}
