"""ONNX Runtime reference for `argus-bench backbone`.

Builds the same EfficientNet-Lite0 network (BatchNorm folded, TensorFlow SAME padding, ReLU6, no SE) as an ONNX
graph straight from Argus's converted safetensors weights and checks its ImageNet logits against Argus's on a
shared input; prints one JSON line with the result. Then it times on request, so that Argus can alternate
rounds of its own passes with rounds of these: each line read from stdin, "BATCH PASSES", runs one untimed
pass and PASSES timed ones at that batch size and answers with one JSON line, the milliseconds per image of
each pass. End of input ends it.

usage: python bench_backbone_ort.py WEIGHTS.safetensors INPUT.npy ARGUS_LOGITS.npy THREADS
"""

import json
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(meta["shape"])
    return out


def same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2, out


def build(w, size):
    nodes, inits = [], []
    counter = [0]

    def name(p):
        counter[0] += 1
        return f"{p}{counter[0]}"

    def conv(x, conv_name, bn, stride, groups, relu6, hw):
        weight = w[conv_name + ".weight"]
        gamma, beta = w[bn + ".weight"], w[bn + ".bias"]
        mean, var = w[bn + ".running_mean"], w[bn + ".running_var"]
        scale = gamma / np.sqrt(var + 1e-3)
        wf = (weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
        bf = (beta - mean * scale).astype(np.float32)
        k = wf.shape[-1]
        t, b, out = same_pads(hw, k, stride)
        wn, bn_ = name("w"), name("b")
        inits.extend([numpy_helper.from_array(wf, wn), numpy_helper.from_array(bf, bn_)])
        y = name("conv")
        nodes.append(helper.make_node("Conv", [x, wn, bn_], [y], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[t, t, b, b], group=groups))
        if relu6:
            z = name("relu6")
            lo, hi = name("lo"), name("hi")
            inits.extend([numpy_helper.from_array(np.array(0, np.float32), lo),
                          numpy_helper.from_array(np.array(6, np.float32), hi)])
            nodes.append(helper.make_node("Clip", [y, lo, hi], [z]))
            y = z
        return y, out

    x, hw = "input", size
    x, hw = conv(x, "_conv_stem", "_bn0", 2, 1, True, hw)
    i = 0
    for repeats, k, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            inp = cin if r == 0 else cout
            p = f"_blocks.{i}"
            h = x
            if expand != 1:
                h, _ = conv(h, p + "._expand_conv", p + "._bn0", 1, 1, True, hw)
            ch = w[p + "._depthwise_conv.weight"].shape[0]
            h, out = conv(h, p + "._depthwise_conv", p + "._bn1", s, ch, True, hw)
            h, _ = conv(h, p + "._project_conv", p + "._bn2", 1, 1, False, out)
            if s == 1 and inp == cout:
                y = name("add")
                nodes.append(helper.make_node("Add", [h, x], [y]))
                h = y
            x, hw = h, out
            i += 1
    x, _ = conv(x, "_conv_head", "_bn1", 1, 1, True, hw)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled4"]))
    nodes.append(helper.make_node("Flatten", ["pooled4"], ["pooled"]))
    inits.extend([numpy_helper.from_array(w["_fc.weight"].astype(np.float32), "fc_w"),
                  numpy_helper.from_array(w["_fc.bias"].astype(np.float32), "fc_b")])
    nodes.append(helper.make_node("Gemm", ["pooled", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "efficientnet_lite0",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def main():
    weights, inp, argus_logits, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model = build(load_safetensors(weights), 224)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.load(inp).astype(np.float32)
    logits = sess.run(None, {"input": x})[0]
    diff = float(np.max(np.abs(logits - np.load(argus_logits))))
    print(json.dumps({"max_abs_logit_diff": diff, "onnxruntime": ort.__version__}), flush=True)
    for line in sys.stdin:
        batch, passes = (int(v) for v in line.split())
        xb = np.repeat(x[:1], batch, axis=0)
        sess.run(None, {"input": xb})
        times = []
        for _ in range(passes):
            t = time.perf_counter()
            sess.run(None, {"input": xb})
            times.append((time.perf_counter() - t) * 1000 / batch)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()
