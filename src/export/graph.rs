//! A small builder for ONNX graphs: nodes with fresh value names, weights
//! and constants as initializers, in one of two compute types (float32, or
//! float16 for `--precision fp16`).

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::onnx::{attribute_type, data_type, AttributeProto, NodeProto, TensorProto};
use crate::{Error, Result};

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
}

/// Element type of the values the network computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    F32,
    F16,
}

impl Compute {
    /// The ONNX `TensorProto.DataType`.
    pub fn data_type(self) -> i32 {
        match self {
            Compute::F32 => data_type::FLOAT,
            Compute::F16 => data_type::FLOAT16,
        }
    }
}

/// Nodes and initializers under construction.
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: HashMap<String, usize>,
    used: std::collections::HashSet<String>,
    /// int64 constants by value, each written once.
    int_constants: HashMap<Vec<i64>, String>,
    /// The compute type of weights and activations.
    pub compute: Compute,
}

impl Graph {
    /// An empty graph computing in `compute`.
    pub fn new(compute: Compute) -> Self {
        Graph {
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: HashMap::new(),
            used: Default::default(),
            int_constants: HashMap::new(),
            compute,
        }
    }

    /// The nodes and initializers.
    pub fn finish(self) -> (Vec<NodeProto>, Vec<TensorProto>) {
        (self.nodes, self.initializers)
    }

    /// A value name not used before, from `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        loop {
            let n = self.names.entry(hint.to_string()).or_insert(0);
            *n += 1;
            let name = if *n == 1 { hint.to_string() } else { format!("{hint}_{}", *n - 1) };
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    /// [`Graph::op`] whose output is `output`, a name reserved with
    /// [`Graph::fresh`] (the graph's outputs).
    pub fn op_into(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], output: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op.to_string(),
            domain: String::new(),
            attribute: attrs.iter().map(|(name, a)| attribute(name, a)).collect(),
            doc_string: String::new(),
        });
    }

    /// Adds `op` on `inputs` ("" for an absent optional input) with one
    /// output named from `hint`; returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)], hint: &str) -> String {
        self.op_n(op, inputs, attrs, hint, 1).remove(0)
    }

    /// [`Graph::op`] with `outputs` outputs.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        hint: &str,
        outputs: usize,
    ) -> Vec<String> {
        let outs: Vec<String> = (0..outputs)
            .map(|i| if outputs == 1 { self.fresh(hint) } else { self.fresh(&format!("{hint}.{i}")) })
            .collect();
        let attribute = attrs.iter().map(|(name, a)| attribute(name, a)).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: outs[0].clone(),
            op_type: op.to_string(),
            domain: String::new(),
            attribute,
            doc_string: String::new(),
        });
        outs
    }

    fn push_initializer(&mut self, hint: &str, dims: Vec<i64>, data_type: i32, raw_data: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto { dims, data_type, name: name.clone(), raw_data });
        name
    }

    /// A weight in the compute type, from a float tensor.
    pub fn weight(&mut self, hint: &str, t: &Tensor) -> Result<String> {
        let compute = self.compute;
        self.tensor(hint, t, compute)
    }

    /// A float32 initializer, whatever the compute type (post-processing).
    pub fn weight_f32(&mut self, hint: &str, t: &Tensor) -> Result<String> {
        self.tensor(hint, t, Compute::F32)
    }

    fn tensor(&mut self, hint: &str, t: &Tensor, kind: Compute) -> Result<String> {
        let dims = t.size();
        let values = Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_contiguous()?.f_flatten(0, -1)?)
            .map_err(|e| Error::config(format!("cannot read tensor {hint}: {e}")))?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::config(format!("tensor {hint} holds a non-finite value ({bad})")));
        }
        let raw = match kind {
            Compute::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // Round to nearest even, as libtorch's `to(torch.float16)`.
            Compute::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        };
        Ok(self.push_initializer(hint, dims, kind.data_type(), raw))
    }

    /// A float32 constant of shape `dims`.
    pub fn floats_f32(&mut self, hint: &str, values: &[f32], dims: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_initializer(hint, dims.to_vec(), data_type::FLOAT, raw)
    }

    /// A scalar (0-d) constant in the compute type.
    pub fn scalar(&mut self, hint: &str, value: f32) -> String {
        match self.compute {
            Compute::F32 => self.floats_f32(hint, &[value], &[]),
            Compute::F16 => {
                let raw = half::f16::from_f32(value).to_le_bytes().to_vec();
                self.push_initializer(hint, vec![], data_type::FLOAT16, raw)
            }
        }
    }

    /// A 1-d int64 constant (shapes, axes, indices), shared by value.
    pub fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.int_constants.get(values) {
            return name.clone();
        }
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let name = self.push_initializer("const_i64", vec![values.len() as i64], data_type::INT64, raw);
        self.int_constants.insert(values.to_vec(), name.clone());
        name
    }

    /// A 0-d int64 constant (a Gather index that drops the axis).
    pub fn int_scalar(&mut self, value: i64) -> String {
        self.push_initializer("index", vec![], data_type::INT64, value.to_le_bytes().to_vec())
    }
}

fn attribute(name: &str, a: &Attr) -> AttributeProto {
    let mut out = AttributeProto { name: name.to_string(), ..Default::default() };
    match a {
        Attr::Int(i) => {
            out.r#type = attribute_type::INT;
            out.i = *i;
        }
        Attr::Ints(v) => {
            out.r#type = attribute_type::INTS;
            out.ints = v.clone();
        }
        Attr::Float(f) => {
            out.r#type = attribute_type::FLOAT;
            out.f = *f;
        }
        Attr::Str(s) => {
            out.r#type = attribute_type::STRING;
            out.s = s.as_bytes().to_vec();
        }
    }
    out
}
