//! The part of the ONNX protobuf schema (`onnx/onnx.proto`, IR version 8) that Argus writes, as prost
//! messages with the schema's field numbers, and a small graph builder over them.

use prost::Message;

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `TensorProto.DataType.FLOAT16`.
pub const FLOAT16: i32 = 10;

/// `ModelProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Operator sets used.
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    /// Producer name.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// Producer version.
    #[prost(string, tag = "3")]
    pub producer_version: String,
    /// Model version.
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    /// Description.
    #[prost(string, tag = "6")]
    pub doc_string: String,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Named metadata.
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    /// Domain ("" is the default ONNX domain).
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Version.
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    /// Nodes in topological order.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    /// Name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    /// Inputs.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    /// Outputs.
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    /// Input value names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output value names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// Node name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Operator.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `AttributeProto` (the kinds Argus uses: float, int, ints).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Float value.
    #[prost(float, tag = "2")]
    pub f: f32,
    /// Int value.
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// String value (bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    /// Int list.
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// `AttributeType`: 1 FLOAT, 2 INT, 3 STRING, 7 INTS.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

impl AttributeProto {
    /// An int attribute.
    pub fn int(name: &str, v: i64) -> Self {
        Self { name: name.into(), i: v, r#type: 2, ..Default::default() }
    }

    /// An int-list attribute.
    pub fn ints(name: &str, v: &[i64]) -> Self {
        Self { name: name.into(), ints: v.to_vec(), r#type: 7, ..Default::default() }
    }

    /// A float attribute.
    pub fn float(name: &str, v: f32) -> Self {
        Self { name: name.into(), f: v, r#type: 1, ..Default::default() }
    }

    /// A string attribute.
    pub fn string(name: &str, v: &str) -> Self {
        Self { name: name.into(), s: v.as_bytes().to_vec(), r#type: 3, ..Default::default() }
    }
}

/// `TensorProto` (raw little-endian data).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian element bytes.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Type.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto` (tensor types only).
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// Tensor type.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    /// Element type.
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    /// Dimensions.
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size or a named, variable one (the two fields of the proto's `oneof`).
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    /// Size, when fixed.
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    /// Name of a variable size.
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// A variable dimension in a [`tensor_info`] shape (declared as `dim_param` "N").
pub const VARIABLE: i64 = -1;

/// A tensor value's declaration; [`VARIABLE`] entries of `shape` are sizes known only when the model runs.
pub fn tensor_info(name: &str, elem_type: i32, shape: &[i64]) -> ValueInfoProto {
    let dimension = |d: &i64| {
        if *d == VARIABLE {
            Dimension { dim_value: None, dim_param: Some("N".into()) }
        } else {
            Dimension { dim_value: Some(*d), dim_param: None }
        }
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim: shape.iter().map(dimension).collect() }),
            }),
        }),
    }
}

/// Builds a graph: nodes in order, constants as initializers, fresh value names.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
    half_weights: bool,
}

impl GraphBuilder {
    /// An empty graph; `half_weights` stores float constants as FLOAT16 (with a Cast back to FLOAT after each,
    /// so the graph computes in FP32 on weights rounded to half precision).
    pub fn new(half_weights: bool) -> Self {
        Self { half_weights, ..Default::default() }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    /// Adds a node with one output; returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.node_into(op, inputs, attributes, &out);
        out
    }

    /// Adds a node writing the value `output`.
    pub fn node_into(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>, output: &str) {
        self.push(op, inputs, attribute, vec![output.to_string()]);
    }

    /// Adds a node with `outputs` outputs (TopK: values and indices); returns their names.
    pub fn node_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let names: Vec<String> = (0..outputs).map(|_| self.fresh(&op.to_ascii_lowercase())).collect();
        self.push(op, inputs, attributes, names.clone());
        names
    }

    fn push(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>, output: Vec<String>) {
        let name = self.fresh(&format!("{op}_node"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output,
            name,
            op_type: op.into(),
            attribute,
        });
    }

    /// A float constant (weights: stored as FLOAT16 when `half_weights`); returns its name.
    pub fn floats(&mut self, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh("w");
        let dims: Vec<i64> = dims.iter().map(|d| *d as i64).collect();
        if self.half_weights {
            let raw = data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
            self.initializers.push(TensorProto { dims, data_type: FLOAT16, name: name.clone(), raw_data: raw });
            self.node("Cast", &[&name], vec![AttributeProto::int("to", FLOAT as i64)])
        } else {
            let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.initializers.push(TensorProto { dims, data_type: FLOAT, name: name.clone(), raw_data: raw });
            name
        }
    }

    /// A float constant kept in FP32 whatever `half_weights` says (small parameters and geometry, where half
    /// precision would move boxes and save nothing); returns its name.
    pub fn exact_floats(&mut self, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh("f");
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// An int64 scalar (rank 0); returns its name.
    pub fn int64_scalar(&mut self, v: i64) -> String {
        let name = self.fresh("i");
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: INT64,
            name: name.clone(),
            raw_data: v.to_le_bytes().to_vec(),
        });
        name
    }

    /// A float scalar kept in FP32 whatever `half_weights` says.
    pub fn scalar(&mut self, v: f32) -> String {
        let name = self.fresh("c");
        self.initializers.push(TensorProto {
            dims: vec![],
            data_type: FLOAT,
            name: name.clone(),
            raw_data: v.to_le_bytes().to_vec(),
        });
        name
    }

    /// An int64 constant; returns its name.
    pub fn int64s(&mut self, data: &[i64]) -> String {
        let name = self.fresh("i");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: raw,
        });
        name
    }

    /// The finished model (opset 13) as protobuf bytes.
    pub fn finish(
        self,
        name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        metadata: &[(&str, String)],
        doc: &str,
    ) -> Vec<u8> {
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
            producer_name: "argus".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            model_version: 1,
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                input: inputs,
                output: outputs,
            }),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto { key: k.to_string(), value: v.clone() })
                .collect(),
        };
        model.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_model_decodes_with_its_graph_and_half_weights_are_cast_back() {
        for half in [false, true] {
            let mut g = GraphBuilder::new(half);
            let w = g.floats(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            let y = g.node("MatMul", &["x", &w], vec![]);
            g.node_into("Relu", &[&y], vec![], "out");
            let bytes = g.finish(
                "t",
                vec![tensor_info("x", FLOAT, &[1, 2])],
                vec![tensor_info("out", FLOAT, &[1, 3])],
                &[("k", "v".to_string())],
                "doc",
            );
            let model = ModelProto::decode(bytes.as_slice()).expect("decode");
            assert_eq!((model.ir_version, model.opset_import[0].version), (8, 13));
            assert_eq!(model.metadata_props, vec![StringStringEntryProto { key: "k".into(), value: "v".into() }]);
            let graph = model.graph.expect("graph");
            let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
            let init = &graph.initializer[0];
            if half {
                assert_eq!(ops, ["Cast", "MatMul", "Relu"]);
                assert_eq!((init.data_type, init.raw_data.len()), (FLOAT16, 12));
                assert_eq!(half::f16::from_le_bytes([init.raw_data[2], init.raw_data[3]]).to_f32(), 2.0);
            } else {
                assert_eq!(ops, ["MatMul", "Relu"]);
                assert_eq!((init.data_type, init.raw_data.len()), (FLOAT, 24));
            }
            assert_eq!(init.dims, vec![2, 3]);
            assert_eq!(graph.node.last().map(|n| n.output.clone()), Some(vec!["out".to_string()]));
            // Same inputs, same bytes.
            let mut again = GraphBuilder::new(half);
            let w = again.floats(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            let y = again.node("MatMul", &["x", &w], vec![]);
            again.node_into("Relu", &[&y], vec![], "out");
            let twice = again.finish(
                "t",
                vec![tensor_info("x", FLOAT, &[1, 2])],
                vec![tensor_info("out", FLOAT, &[1, 3])],
                &[("k", "v".to_string())],
                "doc",
            );
            assert_eq!(bytes, twice);
        }
    }
}
