//! ONNX export of a trained model (`dinomaly-export`): the graph computes
//! what `dinomaly-score` computes after pre-processing, from a normalised
//! float crop (or raw uint8 crops with the normalisation inside) to the
//! anomaly map and the image score, for runtimes without libtorch
//! (onnxruntime, OpenVINO, TensorRT, Triton).
//!
//! The model is opened exactly as dinomaly-score opens it
//! ([`crate::score::scorer::Scorer::open`]: the same checkpoint kinds,
//! encoder lookup and checks, map size and top ratio), on the CPU in
//! float32; its weights are then written into the graph ([`net`]).
//!
//! Opset 17 (IR version 8): the first opset with LayerNormalization, and
//! one that onnxruntime (1.12+), OpenVINO (2022.3+), TensorRT (8.6+) and
//! tract implement in full for the operators used; newer opsets would only
//! add Gelu (20), which TensorRT 8.6 lacks.

pub mod graph;
pub mod net;
pub mod onnx;

use serde_json::{json, Map, Value};
use tch::Device;

use self::graph::{Attr, Compute, Graph};
use self::onnx::{data_type, Dim, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::data::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use crate::score::scorer::{CheckpointKind, Scorer, ScorerRequest};
use crate::{Error, Result};

/// The operator set written (see the module documentation for why).
pub const OPSET: i64 = 17;
/// The IR version of opset 17 (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// Name of the graph's image input.
pub const INPUT: &str = "image";
/// Name of the anomaly-map output.
pub const MAP_OUTPUT: &str = "anomaly_map";
/// Name of the score output.
pub const SCORE_OUTPUT: &str = "score";
/// Name of the symbolic batch dimension.
pub const BATCH_DIM: &str = "batch";

/// Weights and compute type of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportPrecision {
    /// float32 throughout.
    #[default]
    Fp32,
    /// float16 weights and encoder/decoder compute; the LayerNorms, the
    /// linear attention, the maps and the score in float32; float32 graph I/O.
    Fp16,
}

/// What the graph's input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// Normalised float32 crops, as dinomaly-score feeds its model.
    #[default]
    Float,
    /// Raw RGB crops, uint8; `/255` and the mean/std normalisation run in
    /// the graph.
    Uint8,
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// How to open the model (as dinomaly-score; precision and device are
    /// ignored: the export reads float32 weights on the CPU).
    pub scorer: ScorerRequest,
    /// Static batch size; `None` is a dynamic batch axis.
    pub batch: Option<i64>,
    /// Weights and compute type.
    pub precision: ExportPrecision,
    /// Input kind.
    pub input: InputKind,
}

/// An exported model.
#[derive(Debug)]
pub struct Exported {
    /// The encoded `.onnx` file.
    pub bytes: Vec<u8>,
    /// The graph's inputs, `[{"name", "dtype", "shape"}]`, -1 the dynamic batch.
    pub inputs: Value,
    /// The graph's outputs, likewise.
    pub outputs: Value,
    /// The metadata written as `metadata_props`.
    pub metadata: Map<String, Value>,
}

/// Opens the checkpoint as dinomaly-score does and builds its ONNX model.
pub fn export(req: &ExportRequest) -> Result<Exported> {
    if req.batch.is_some_and(|b| b < 1) {
        return Err(Error::config("a static batch must be at least 1"));
    }
    let mut scorer_req = req.scorer.clone();
    scorer_req.precision = crate::model::amp::Precision::Fp32;
    scorer_req.features_only = false;
    let scorer = Scorer::open(&scorer_req, Device::Cpu)?;
    let calibration = match scorer.kind {
        CheckpointKind::Dinomaly => crate::io::checkpoint::read_meta(&scorer_req.checkpoint)?.calibration,
        _ => None,
    };
    let encoder = scorer.encoder().ok_or_else(|| Error::config("the model was opened without its encoder"))?;
    let post = *scorer.post_process();
    let prep = scorer.preprocess();
    let model = scorer.model();
    let spec = net::NetSpec {
        vit: encoder.config(),
        encoder: encoder.named_tensors(),
        layers: encoder.layers(),
        pos_interp: encoder.pos_interp(),
        model: model.config(),
        trainable: model.named_parameters().into_iter().collect(),
        post,
    };
    let compute = match req.precision {
        ExportPrecision::Fp32 => Compute::F32,
        ExportPrecision::Fp16 => Compute::F16,
    };
    let mut g = Graph::new(compute);
    // Reserve the graph's I/O names before any node takes them.
    for name in [INPUT, MAP_OUTPUT, SCORE_OUTPUT] {
        g.fresh(name);
    }
    let (crop_h, crop_w) = (post.crop.0, post.crop.1);
    let image = input_stage(&mut g, req.input)?;
    let (map, score) = net::build(&mut g, &image, &spec)?;
    let (map_h, map_w) = post.output_size();
    let map_shape = g.ints(&[0, map_h, map_w]);
    g.op_into("Reshape", &[&map, &map_shape], &[], MAP_OUTPUT);
    g.op_into("Identity", &[&score], &[], SCORE_OUTPUT);
    let (nodes, initializers) = g.finish();

    let batch_dim = match req.batch {
        Some(n) => Dim::Fixed(n),
        None => Dim::Named(BATCH_DIM.to_string()),
    };
    let input_type = match req.input {
        InputKind::Float => data_type::FLOAT,
        InputKind::Uint8 => data_type::UINT8,
    };
    let graph = GraphProto {
        node: nodes,
        name: "dinomaly".into(),
        initializer: initializers,
        doc_string: String::new(),
        input: vec![onnx::value_info(
            INPUT,
            input_type,
            &[batch_dim.clone(), Dim::Fixed(3), Dim::Fixed(crop_h), Dim::Fixed(crop_w)],
        )],
        output: vec![
            onnx::value_info(MAP_OUTPUT, data_type::FLOAT, &[batch_dim.clone(), Dim::Fixed(map_h), Dim::Fixed(map_w)]),
            onnx::value_info(SCORE_OUTPUT, data_type::FLOAT, &[batch_dim]),
        ],
        value_info: Vec::new(),
    };

    let meta = &scorer.encoder_meta;
    let mut metadata = Map::new();
    let mut put = |k: &str, v: String| {
        metadata.insert(k.to_string(), Value::String(v));
    };
    put("dinomaly.version", env!("CARGO_PKG_VERSION").to_string());
    put("dinomaly.model_id", scorer.model_id().to_string());
    put("backbone", meta.backbone.clone());
    put("encoder_sha256", meta.weights_sha256.clone());
    put("checkpoint_kind", crate::io::names::name_of(&scorer.kind));
    put("resize", json!([prep.resize().0, prep.resize().1]).to_string());
    put("resize_backend", crate::io::names::name_of(&prep.backend()));
    put("crop", json!([crop_h, crop_w]).to_string());
    put("mean", json!(IMAGENET_MEAN.map(decimal)).to_string());
    put("std", json!(IMAGENET_STD.map(decimal)).to_string());
    put("map_size", json!([map_h, map_w]).to_string());
    put("score_map_size", json!([post.map_size.0, post.map_size.1]).to_string());
    put("top_ratio", json!(post.max_ratio).to_string());
    put("layers", json!(encoder.layers()).to_string());
    put("input_kind", crate::io::names::name_of(&req.input));
    put("precision", crate::io::names::name_of(&req.precision));
    if let Some(c) = &calibration {
        put("calibration", serde_json::to_string(c).map_err(|e| Error::config(format!("calibration: {e}")))?);
    }
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "dinomaly-export".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: format!(
            "Dinomaly anomaly detection ({}): input '{INPUT}' {}, outputs '{MAP_OUTPUT}' and '{SCORE_OUTPUT}'",
            meta.backbone,
            match req.input {
                InputKind::Float => "normalised float32 crops",
                InputKind::Uint8 => "raw uint8 RGB crops",
            }
        ),
        graph: Some(graph),
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.as_str().unwrap_or_default().to_string() })
            .collect(),
    };
    let batch = req.batch.unwrap_or(-1);
    let input_dtype = match req.input {
        InputKind::Float => "float32",
        InputKind::Uint8 => "uint8",
    };
    Ok(Exported {
        bytes: onnx::encode(&model).map_err(|len| {
            let hint = match req.precision {
                ExportPrecision::Fp32 if len / 2 < onnx::MAX_PROTO_BYTES => " (--precision fp16 halves it)",
                _ => "",
            };
            Error::config(format!(
                "the model is {:.2} GiB, more than the 2 GiB a single .onnx file can hold{hint}",
                len as f64 / f64::from(1u32 << 30)
            ))
        })?,
        inputs: json!([{"name": INPUT, "dtype": input_dtype, "shape": [batch, 3, crop_h, crop_w]}]),
        outputs: json!([
            {"name": MAP_OUTPUT, "dtype": "float32", "shape": [batch, map_h, map_w]},
            {"name": SCORE_OUTPUT, "dtype": "float32", "shape": [batch]},
        ]),
        metadata,
    })
}

/// A float32 constant as the decimal it was written as (0.485, not
/// 0.48500001430511475): the shortest text that reads back to the same
/// float32, which is how torchvision and anomalib write these constants.
fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// The input and its normalisation: for uint8, `(x / 255 - mean) / std`
/// in float32 as the PIL pre-processing computes it
/// (`data::preprocess` `pil_chw`: ToTensor then Normalize); then a cast to
/// the compute type when it is float16. Returns the network's input.
fn input_stage(g: &mut Graph, kind: InputKind) -> Result<String> {
    let mut x = INPUT.to_string();
    if kind == InputKind::Uint8 {
        x = g.op("Cast", &[&x], &[("to", Attr::Int(data_type::FLOAT as i64))], "image_f32");
        let d255 = g.floats_f32("255", &[255.0], &[]);
        let mean = g.floats_f32("mean", &IMAGENET_MEAN, &[1, 3, 1, 1]);
        let std = g.floats_f32("std", &IMAGENET_STD, &[1, 3, 1, 1]);
        x = g.op("Div", &[&x, &d255], &[], "normalised");
        x = g.op("Sub", &[&x, &mean], &[], "normalised");
        x = g.op("Div", &[&x, &std], &[], "normalised");
    }
    if g.compute == Compute::F16 {
        x = g.op("Cast", &[&x], &[("to", Attr::Int(data_type::FLOAT16 as i64))], "image_f16");
    }
    Ok(x)
}
