//! The geometry of an anomaly map, written by `dinomaly-score` beside each
//! map (`"map_geometry"`) and read by `dinomaly-metrics`, so that ground
//! truth masks are brought to the map exactly as the images were without
//! the user repeating the model's `--resize`/`--crop`.

use serde_json::{json, Value};

/// The pre-processing a map was made under: the image resized to `resize`
/// (height, width), then centre-cropped to `crop`; the map covers the crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapGeometry {
    pub resize: (usize, usize),
    pub crop: (usize, usize),
}

impl MapGeometry {
    /// The official test-time geometry (448 resized, 392 cropped).
    pub const OFFICIAL: MapGeometry = MapGeometry { resize: (448, 448), crop: (392, 392) };

    /// The JSON value dinomaly-score writes beside a map.
    pub fn to_json(self) -> Value {
        json!({"resize": [self.resize.0, self.resize.1], "crop": [self.crop.0, self.crop.1]})
    }

    /// Reads the value written by [`MapGeometry::to_json`].
    pub fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let pair = |key: &str| -> std::result::Result<(usize, usize), String> {
            match v.get(key).and_then(Value::as_array).map(Vec::as_slice) {
                Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                    (Some(h), Some(w)) if h > 0 && w > 0 => Ok((h as usize, w as usize)),
                    _ => Err(format!("\"map_geometry\".{key} must hold two positive integers")),
                },
                _ => Err(format!("\"map_geometry\" needs \"{key}\": [height, width]")),
            }
        };
        Ok(MapGeometry { resize: pair("resize")?, crop: pair("crop")? })
    }
}

/// Serialized as [`MapGeometry::to_json`] writes it (the scored record's
/// `"map_geometry"` field).
impl serde::Serialize for MapGeometry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.to_json(), serializer)
    }
}

/// Read with [`MapGeometry::from_json`]'s checks and messages.
impl<'de> serde::Deserialize<'de> for MapGeometry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let value = <Value as serde::Deserialize>::deserialize(deserializer)?;
        MapGeometry::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed_values() {
        let g = MapGeometry { resize: (300, 400), crop: (280, 392) };
        assert_eq!(MapGeometry::from_json(&g.to_json()).unwrap(), g);
        for bad in [
            json!({}),
            json!({"resize": [448], "crop": [392, 392]}),
            json!({"resize": [448, 0], "crop": [392, 392]}),
            json!({"resize": [448, 448], "crop": "392"}),
        ] {
            let err = MapGeometry::from_json(&bad).unwrap_err();
            assert!(err.contains("map_geometry"), "{err}");
        }
    }
}
